import { describe, expect, it } from 'vitest';
import { throttledWarning } from './throttled-log.js';
import type { TftpLog } from './transfer.js';

describe('throttledWarning', () => {
  it('logs the first warning, suppresses the rest of the interval, then reports how many were suppressed', () => {
    const lines: { obj: object; msg?: string }[] = [];
    const log: TftpLog = { debug() {}, info() {}, error() {}, warn: (obj, msg) => lines.push({ obj, msg }) };
    let clock = 0;
    const warn = throttledWarning(log, 'tftp: refused', 1000, () => clock);
    for (let i = 0; i < 200; i++) warn({ from: `127.0.0.1:${i}` });
    expect(lines).toEqual([{ obj: { from: '127.0.0.1:0' }, msg: 'tftp: refused' }]);
    clock = 999;
    warn({ from: 'a' });
    expect(lines).toHaveLength(1);
    clock = 1000;
    warn({ from: 'b' });
    expect(lines[1]).toEqual({ obj: { from: 'b', suppressed: 200 }, msg: 'tftp: refused' });
    clock = 5000;
    warn({ from: 'c' });
    expect(lines[2]).toEqual({ obj: { from: 'c' }, msg: 'tftp: refused' });
  });

  it('works without a logger', () => {
    expect(() => throttledWarning(undefined, 'x')({})).not.toThrow();
  });
});
