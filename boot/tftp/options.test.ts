import { describe, expect, it } from 'vitest';
import { DEFAULT_MAX_BLKSIZE, DEFAULT_MAX_WINDOWSIZE, MAX_TIMEOUT_S, MAX_WINDOW_BYTES, negotiateOptions } from './options.js';
import type { TftpOption } from './packet.js';

const limits = { maxBlksize: DEFAULT_MAX_BLKSIZE, maxWindowsize: DEFAULT_MAX_WINDOWSIZE };
const opts = (...pairs: [string, string][]): TftpOption[] => pairs.map(([name, value]) => ({ name, value }));

describe('negotiateOptions', () => {
  it('without options: 512-byte blocks, lock-step, no OACK (RFC 1350)', () => {
    expect(negotiateOptions([], 1000, limits)).toEqual({ params: { blksize: 512, windowsize: 1 }, oack: [] });
  });

  it('accepts blksize, tsize, timeout and windowsize, answering in request order', () => {
    const n = negotiateOptions(opts(['tsize', '0'], ['blksize', '1428'], ['timeout', '3'], ['windowsize', '8']), 74213, limits);
    expect(n.params).toEqual({ blksize: 1428, windowsize: 8, timeoutMs: 3000 });
    expect(n.oack).toEqual(opts(['tsize', '74213'], ['blksize', '1428'], ['timeout', '3'], ['windowsize', '8']));
  });

  it('clamps blksize to the configured maximum (default 1468, one Ethernet frame)', () => {
    expect(negotiateOptions(opts(['blksize', '8192']), 1, limits).oack).toEqual(opts(['blksize', '1468']));
    expect(negotiateOptions(opts(['blksize', '70000']), 1, { ...limits, maxBlksize: 65464 }).params.blksize).toBe(65464);
    expect(negotiateOptions(opts(['blksize', '8192']), 1, { ...limits, maxBlksize: 65464 }).params.blksize).toBe(8192);
  });

  it('ignores blksize below 8 and timeout outside 1–255 (RFC 2348, RFC 2349)', () => {
    expect(negotiateOptions(opts(['blksize', '7'], ['timeout', '0'], ['timeout', '256']), 1, limits)).toEqual({
      params: { blksize: 512, windowsize: 1 },
      oack: [],
    });
  });

  it('accepts a timeout up to 5 s as asked, and declines a longer one by leaving it out of the OACK (RFC 2349, 2347)', () => {
    expect(negotiateOptions(opts(['timeout', String(MAX_TIMEOUT_S)]), 1, limits)).toEqual({
      params: { blksize: 512, windowsize: 1, timeoutMs: MAX_TIMEOUT_S * 1000 },
      oack: opts(['timeout', String(MAX_TIMEOUT_S)]),
    });
    for (const t of ['6', '255']) {
      expect(negotiateOptions(opts(['timeout', t]), 1, limits)).toEqual({ params: { blksize: 512, windowsize: 1 }, oack: [] });
      expect(negotiateOptions(opts(['tsize', '0'], ['timeout', t], ['blksize', '1024']), 7, limits)).toEqual({
        params: { blksize: 1024, windowsize: 1 },
        oack: opts(['tsize', '7'], ['blksize', '1024']),
      });
    }
  });

  it('answers tsize with the real size whatever the client sent', () => {
    expect(negotiateOptions(opts(['tsize', '0']), 33554432, limits).oack).toEqual(opts(['tsize', '33554432']));
    expect(negotiateOptions(opts(['tsize', '0']), 0, limits).oack).toEqual(opts(['tsize', '0']));
  });

  it('caps windowsize by the limit and by the window byte budget, whatever the option order', () => {
    expect(negotiateOptions(opts(['windowsize', '65535']), 1, limits).params.windowsize).toBe(DEFAULT_MAX_WINDOWSIZE);
    expect(negotiateOptions(opts(['blksize', '1468'], ['windowsize', '65535']), 1, limits).params.windowsize).toBe(Math.floor(MAX_WINDOW_BYTES / 1468));
    const big = { ...limits, maxBlksize: 65464 };
    const before = negotiateOptions(opts(['windowsize', '16'], ['blksize', '8192']), 1, big);
    const after = negotiateOptions(opts(['blksize', '8192'], ['windowsize', '16']), 1, big);
    expect(before.params).toEqual({ blksize: 8192, windowsize: 8 });
    expect(after.params).toEqual({ blksize: 8192, windowsize: 8 });
    expect(before.oack).toEqual(opts(['windowsize', '8'], ['blksize', '8192']));
    expect(negotiateOptions(opts(['blksize', '65464'], ['windowsize', '4']), 1, big).params.windowsize).toBe(1);
    expect(negotiateOptions(opts(['windowsize', '0']), 1, limits).oack).toEqual([]);
    expect(negotiateOptions(opts(['windowsize', '65536']), 1, limits).oack).toEqual([]);
  });

  it('ignores unknown and malformed options; no OACK unless one option is accepted (RFC 2347)', () => {
    const n = negotiateOptions(opts(['multicast', ''], ['blksize', '12x'], ['blksize', '-5'], ['tsize', ' 0'], ['utimeout', '1000']), 9, limits);
    expect(n).toEqual({ params: { blksize: 512, windowsize: 1 }, oack: [] });
  });

  it('takes the first valid occurrence of a repeated option', () => {
    const n = negotiateOptions(opts(['blksize', 'abc'], ['blksize', '1024'], ['blksize', '1400']), 1, limits);
    expect(n.oack).toEqual(opts(['blksize', '1024']));
  });

  it('stays linear on a huge option list', () => {
    const many = Array.from({ length: 20_000 }, (_, i) => ({ name: `x${i}`, value: String(i) }));
    expect(negotiateOptions([...many, ...opts(['tsize', '0'])], 5, limits).oack).toEqual(opts(['tsize', '5']));
  });
});
