import { describe, expect, it } from 'vitest';
import { ackedBlock, blockCount, blockLength, bytesThrough, windowEnd } from './window.js';

describe('block arithmetic', () => {
  it('ends every transfer with a short block, empty when the size is a multiple of blksize (RFC 1350 §6)', () => {
    expect(blockCount(0, 512)).toBe(1);
    expect(blockCount(511, 512)).toBe(1);
    expect(blockCount(512, 512)).toBe(2);
    expect(blockLength(2, 512, 512)).toBe(0);
    expect(blockLength(1, 512, 700)).toBe(512);
    expect(blockLength(2, 512, 700)).toBe(188);
    expect(blockCount(34_000_000, 512)).toBe(66407); // more than 65535: the block number wraps
  });

  it('counts acknowledged payload bytes', () => {
    expect(bytesThrough(0, 512, 700)).toBe(0);
    expect(bytesThrough(1, 512, 700)).toBe(512);
    expect(bytesThrough(2, 512, 700)).toBe(700);
  });

  it('ends a window after windowsize blocks or at the last block', () => {
    expect(windowEnd(1, 16, 100)).toBe(16);
    expect(windowEnd(97, 16, 100)).toBe(100);
    expect(windowEnd(5, 1, 100)).toBe(5);
  });
});

describe('ackedBlock', () => {
  it('maps a wire number to the absolute block it acknowledges', () => {
    expect(ackedBlock(16, 0, 16)).toBe(16);
    expect(ackedBlock(8, 0, 16)).toBe(8); // a partial window (RFC 7440 §4)
  });

  it('ignores duplicates and ACKs of blocks never sent (RFC 1123 §4.2.3.1)', () => {
    expect(ackedBlock(16, 16, 32)).toBeUndefined();
    expect(ackedBlock(3, 16, 32)).toBeUndefined();
    expect(ackedBlock(33, 16, 32)).toBeUndefined();
  });

  it('follows the block number across the 65535 → 0 rollover', () => {
    expect(ackedBlock(0, 65535, 65536)).toBe(65536);
    expect(ackedBlock(65535, 65530, 65540)).toBe(65535);
    expect(ackedBlock(3, 65530, 65540)).toBe(65539);
    expect(ackedBlock(2, 131072 + 1, 131072 + 10)).toBe(131072 + 2);
    expect(ackedBlock(65535, 65536, 65540)).toBeUndefined(); // the old block 65535, a duplicate
  });
});
