import { afterEach, describe, expect, it, vi } from 'vitest';
import { DragonflyError } from '../schemas/errors.js';
import { parseRate, TokenBucket } from './rate.js';

describe('parseRate', () => {
  it.each([
    ['20MB/s', 20_000_000],
    ['100Mbit/s', 12_500_000],
    ['1.5GiB/s', 1_610_612_736],
    ['500KB/s', 500_000],
    ['500kB/s', 500_000],
    ['8kbit/s', 1_000],
    ['1MiB/s', 1_048_576],
    ['1Mibit/s', 131_072],
    ['2Gbit/s', 250_000_000],
    ['1TB/s', 1e12],
    ['100B/s', 100],
    ['8bit/s', 1],
    ['1bit/s', 0.125],
    ['20 MB/s', 20_000_000],
    [' 20MB/s\n', 20_000_000],
    ['0', Infinity],
    ['unlimited', Infinity],
  ])('%j is %d bytes per second', (text, bytes) => {
    expect(parseRate(text)).toBe(bytes);
  });

  it.each(['', '20', '20MB', '20Mb/s', '20mb/s', '20MBps', '20 MiB/sec', '20MB/s/s', '-1MB/s', '1e6B/s', 'MB/s', '.5MB/s', '20  MB/s', '20kiB/s', 'fast', 'Infinity', 'unlimited!', 'Unlimited', '0.0', '9'.repeat(400) + 'B/s'])(
    'refuses %j with a hint that shows valid rates',
    (text) => {
      const e = (() => {
        try {
          parseRate(text);
        } catch (err) {
          return err;
        }
      })();
      expect(e).toBeInstanceOf(DragonflyError);
      expect(e).toMatchObject({ code: 'DF_ERR_RATE', hint: expect.stringContaining('20MB/s, 100Mbit/s') });
    },
  );

  it('refuses a rate of zero with a unit rather than reading it as unlimited', () => {
    expect(() => parseRate('0MB/s')).toThrow(expect.objectContaining({ code: 'DF_ERR_RATE', hint: expect.stringContaining('0 or unlimited alone') }));
    expect(() => parseRate('0.0kbit/s')).toThrow(expect.objectContaining({ code: 'DF_ERR_RATE' }));
  });
});

/** A clock the test moves by hand, in milliseconds. */
function fakeClock(start = 1_000) {
  let t = start;
  return { now: () => t, advance: (ms: number) => (t += ms), set: (ms: number) => (t = ms) };
}

describe('TokenBucket.reserve', () => {
  it('lets a full burst through at once, then waits for the refill', () => {
    const clock = fakeClock();
    const b = new TokenBucket({ rate: 1000, burst: 500, now: clock.now });
    expect(b.reserve(500)).toBe(0);
    expect(b.reserve(250)).toBe(250); // 250 bytes at 1000 B/s
    clock.advance(250);
    expect(b.reserve(0)).toBe(0); // the debt is paid
    clock.advance(10_000); // a quiet spell refills to the burst, no further
    expect(b.reserve(600)).toBe(100);
  });

  it('takes a write larger than the burst, delayed in proportion instead of starved', () => {
    const clock = fakeClock();
    const b = new TokenBucket({ rate: 1000, burst: 500, now: clock.now });
    expect(b.reserve(5000)).toBe(4500);
  });

  it('queues later reservations behind the debt of earlier ones', () => {
    const clock = fakeClock();
    const b = new TokenBucket({ rate: 1000, burst: 1000, now: clock.now });
    expect([b.reserve(1000), b.reserve(1000), b.reserve(1000)]).toEqual([0, 1000, 2000]);
    clock.advance(1500);
    expect(b.reserve(0)).toBe(500);
  });

  it('rounds a wait up to whole milliseconds, so after it the balance is never negative', () => {
    const clock = fakeClock();
    const b = new TokenBucket({ rate: 3, burst: 1, now: clock.now });
    b.reserve(1);
    expect(b.reserve(1)).toBe(334); // 1/3 s
    clock.advance(334);
    expect(b.reserve(0)).toBe(0);
  });

  it('holds a sender to rate × time + burst however it chunks its writes', () => {
    const clock = fakeClock();
    const rate = 12_500_000; // 100Mbit/s
    const burst = 256 * 1024;
    const b = new TokenBucket({ rate, burst, now: clock.now });
    let sent = 0;
    for (const size of [1, 65536, 4 * 2 ** 20, 1500, 1_000_000, 7, 4 * 2 ** 20]) {
      for (let k = 0; k < 20; k++) {
        clock.advance(b.reserve(size)); // the sender sleeps as told, then sends
        sent += size;
        const elapsed = clock.now() - 1_000;
        expect(sent).toBeLessThanOrEqual((rate * elapsed) / 1000 + burst + 1e-6);
      }
    }
    const seconds = (clock.now() - 1_000) / 1000;
    expect(sent / seconds).toBeGreaterThan(rate * 0.99);
    expect(sent / seconds).toBeLessThanOrEqual(rate * 1.01);
  });

  it('gains nothing when the clock goes back', () => {
    const clock = fakeClock(10_000);
    const b = new TokenBucket({ rate: 1000, burst: 1000, now: clock.now });
    expect(b.reserve(1000)).toBe(0);
    clock.set(5_000);
    expect(b.reserve(100)).toBe(100);
    clock.set(10_000); // back where it was: still no time has passed since the last refill
    expect(b.reserve(0)).toBe(100);
  });

  it('never waits at an unlimited rate', () => {
    const b = new TokenBucket({ rate: parseRate('unlimited'), burst: 1, now: () => 0 });
    expect([b.reserve(2 ** 40), b.reserve(2 ** 40)]).toEqual([0, 0]);
  });

  it('refuses a rate, burst or size that cannot work', () => {
    for (const rate of [0, -1, NaN]) expect(() => new TokenBucket({ rate, burst: 1 }), String(rate)).toThrow(RangeError);
    for (const burst of [0, -1, NaN, Infinity]) expect(() => new TokenBucket({ rate: 1, burst }), String(burst)).toThrow(RangeError);
    const b = new TokenBucket({ rate: 1, burst: 1 });
    for (const bytes of [-1, NaN, Infinity]) expect(() => b.reserve(bytes), String(bytes)).toThrow(RangeError);
  });
});

describe('TokenBucket.take', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  it('sleeps as long as reserve says', async () => {
    vi.useFakeTimers();
    const b = new TokenBucket({ rate: 1000, burst: 1000, now: () => Date.now() });
    await b.take(1000); // within the burst: at once
    let done = false;
    const p = b.take(500).then(() => (done = true));
    await vi.advanceTimersByTimeAsync(499);
    expect(done).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(done).toBe(true);
    await p;
  });

  it('gives the bytes back when the wait is aborted', async () => {
    vi.useFakeTimers();
    const b = new TokenBucket({ rate: 1000, burst: 1000, now: () => Date.now() });
    await b.take(1000);
    const abort = new AbortController();
    const p = b.take(2000, abort.signal);
    await vi.advanceTimersByTimeAsync(100);
    abort.abort(new Error('peer gone'));
    await expect(p).rejects.toThrow('peer gone');
    // 100 ms refilled 100 bytes; the 2000 aborted bytes were not spent, so 100 more wait nothing.
    expect(b.reserve(100)).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
    await expect(b.take(1, AbortSignal.abort(new Error('already')))).rejects.toThrow('already');
  });

  it('never sleeps at an unlimited rate', async () => {
    vi.useFakeTimers();
    const b = new TokenBucket({ rate: Infinity, burst: 1 });
    await b.take(2 ** 40);
    expect(vi.getTimerCount()).toBe(0);
  });
});
