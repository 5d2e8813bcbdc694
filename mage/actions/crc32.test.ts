import { randomBytes } from 'node:crypto';
import zlib from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { crc32, CRC32_IS_BUILTIN, crc32Table } from './crc32.js';

describe('crc32', () => {
  it('gives the IEEE check value for "123456789"', () => {
    const check = Buffer.from('123456789', 'ascii');
    expect(crc32(check)).toBe(0xcbf43926);
    expect(crc32Table(check)).toBe(0xcbf43926);
    expect(crc32(Buffer.alloc(0))).toBe(0);
  });

  it('uses node:zlib crc32 when this Node has it (20.15+), and the table agrees with it', () => {
    expect(CRC32_IS_BUILTIN).toBe(typeof (zlib as { crc32?: unknown }).crc32 === 'function');
    for (const n of [1, 92, 128, 16384, 65537]) {
      const data = randomBytes(n);
      expect(crc32Table(data), `length ${n}`).toBe(crc32(data));
    }
  });

  it('is unsigned even when the top bit is set', () => {
    const values = Array.from({ length: 64 }, (_, i) => crc32(Buffer.from([i])));
    expect(values.some((v) => v >= 0x80000000)).toBe(true);
    expect(values.every((v) => v >= 0 && v <= 0xffffffff)).toBe(true);
  });
});
