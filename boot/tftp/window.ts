// Block arithmetic of a read transfer: pure. Blocks are numbered from 1 in absolute terms (a JS number,
// exact far beyond any file size); the 16-bit number on the wire is the absolute number modulo 2^16.

/**
 * Number of DATA blocks for a file: RFC 1350 §6 ends a transfer with a block shorter than blksize, so a
 * file whose size is a multiple of blksize ends with an empty block.
 */
export function blockCount(size: number, blksize: number): number {
  return Math.floor(size / blksize) + 1;
}

/** Byte offset of absolute block `block` (1-based). */
export function blockOffset(block: number, blksize: number): number {
  return (block - 1) * blksize;
}

/** Payload bytes of absolute block `block`. */
export function blockLength(block: number, blksize: number, size: number): number {
  return Math.max(0, Math.min(blksize, size - blockOffset(block, blksize)));
}

/** Payload bytes in blocks 1..`blocks`: what a client holds once it has acknowledged `blocks`. */
export function bytesThrough(blocks: number, blksize: number, size: number): number {
  return Math.min(size, blocks * blksize);
}

/**
 * The absolute block a wire ACK number acknowledges, or undefined when it acknowledges nothing new.
 * Block numbers wrap past 65535 to 0, so the ACK is read relative to the last acknowledged block; since
 * at most one window (< 2^16 blocks) is outstanding, the match in (acked, highestSent] is unique.
 * An ACK at or below `acked` is a duplicate and must not trigger a resend (RFC 1123 §4.2.3.1: the
 * Sorcerer's Apprentice bug).
 */
export function ackedBlock(wire: number, acked: number, highestSent: number): number | undefined {
  const block = acked + ((wire - (acked & 0xffff) + 0x10000) & 0xffff);
  return block > acked && block <= highestSent ? block : undefined;
}

/** Last block of the window that starts at `first` (RFC 7440 §4: `windowsize` blocks, then wait for an ACK). */
export function windowEnd(first: number, windowsize: number, total: number): number {
  return Math.min(total, first + windowsize - 1);
}
