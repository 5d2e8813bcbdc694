import { describe, expect, it } from 'vitest';
import { RetransmitTimer } from './rto.js';

describe('RetransmitTimer (RFC 1123 §4.2.3.2 adaptive timeout, RFC 6298 estimator)', () => {
  it('waits the maximum until a round trip is measured, then adapts within [min, max]', () => {
    const t = new RetransmitTimer(1000);
    expect(t.current()).toBe(1000);
    expect(t.atMaximum()).toBe(true);
    t.sample(0.2);
    expect(t.current()).toBe(50);
    for (let i = 0; i < 50; i++) t.sample(300);
    expect(t.current()).toBeGreaterThan(300);
    expect(t.current()).toBeLessThanOrEqual(1000);
  });

  it('backs off exponentially up to the maximum, and resets on progress', () => {
    const t = new RetransmitTimer(1000);
    t.sample(0.2);
    const waits = [];
    for (let i = 0; i < 7; i++) {
      waits.push(t.current());
      t.backoff();
    }
    expect(waits).toEqual([50, 100, 200, 400, 800, 1000, 1000]);
    t.progress();
    expect(t.current()).toBe(50);
  });

  it('is fixed when the client negotiated a timeout (RFC 2349)', () => {
    const t = new RetransmitTimer(3000, 3000);
    t.sample(1);
    expect(t.current()).toBe(3000);
    expect(t.atMaximum()).toBe(true);
  });
});
