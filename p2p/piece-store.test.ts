import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { buildManifest, pieceRange, verifyPiece, type Manifest } from './manifest.js';
import { FilePieceStore, RAM_WINDOW_DEFAULT_BYTES, RamWindowStore } from './piece-store.js';

const MiB = 2 ** 20;

async function manifestOf(bytes: Buffer): Promise<Manifest> {
  return buildManifest([bytes], { expectedSize: bytes.length, expectedSha256: createHash('sha256').update(bytes).digest('hex') });
}

/** A manifest the RAM window can size pieces by; it never hashes, so the digests are placeholders. */
function shapeOnly(pieceLength: number, count: number): Manifest {
  return { version: 1, size: pieceLength * count, sha256: '0'.repeat(64), pieceLength, pieces: Array.from({ length: count }, () => '0'.repeat(64)) };
}

function slice(bytes: Buffer, m: Manifest, i: number): Buffer {
  const { offset, length } = pieceRange(m, i);
  return bytes.subarray(offset, offset + length);
}

/** Buffer equality by memcmp: vitest's toEqual walks 4 MiB byte by byte, for seconds. */
function same(a: Buffer | undefined, b: Buffer): boolean {
  return a !== undefined && a.equals(b);
}

function heldList(store: { held(): { length: number; has(i: number): boolean } }): number[] {
  const field = store.held();
  return Array.from({ length: field.length }, (_, i) => i).filter((i) => field.has(i));
}

describe('FilePieceStore', () => {
  let dir: string;
  let file: string;
  let image: Buffer;
  let manifest: Manifest;

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'df-piece-store-'));
    file = path.join(dir, 'disk.img');
    image = randomBytes(2 * 4 * MiB + 1234); // three pieces, the last one short
    manifest = await manifestOf(image);
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  /** Writes piece i at its offset, as image2disk does, without telling the store. */
  function writePiece(i: number, bytes = slice(image, manifest, i)): void {
    const fd = fs.openSync(file, fs.existsSync(file) ? 'r+' : 'w+');
    fs.writeSync(fd, bytes, 0, bytes.length, pieceRange(manifest, i).offset);
    fs.closeSync(fd);
  }

  it('serves only pieces marked written, read back by offset', async () => {
    const store = new FilePieceStore({ path: file, manifest });
    expect(manifest.pieces).toHaveLength(3);
    writePiece(2);
    // Written but not marked: the write may not be complete, or not verified; not served.
    expect(store.has(2)).toBe(false);
    expect(await store.read(2)).toBeUndefined();
    expect(store.held().count()).toBe(0);

    store.markWritten(2);
    expect(store.has(2)).toBe(true);
    const piece = await store.read(2);
    expect(same(piece, slice(image, manifest, 2))).toBe(true);
    expect(verifyPiece(manifest, 2, piece!)).toBe(true);
    expect(heldList(store)).toEqual([2]);

    writePiece(0);
    store.markWritten(0);
    store.markWritten(0); // idempotent
    expect(same(await store.read(0), slice(image, manifest, 0))).toBe(true);
    expect(heldList(store)).toEqual([0, 2]);
    expect(store.held().length).toBe(3);
    await store.close();
  });

  it('refuses to mark a piece the image does not have', () => {
    const store = new FilePieceStore({ path: file, manifest });
    for (const i of [-1, 3, 1.5, NaN]) expect(() => store.markWritten(i)).toThrow(RangeError);
    for (const i of [-1, 3, 1.5, NaN]) expect(store.has(i)).toBe(false);
  });

  it('drops a piece whose bytes changed on disk (a later action mounted or wrote the partition) and says so once', async () => {
    const onEvict = vi.fn();
    const store = new FilePieceStore({ path: file, manifest, onEvict });
    for (const i of [0, 1, 2]) {
      writePiece(i);
      store.markWritten(i);
    }
    const changed = Buffer.from(slice(image, manifest, 1));
    changed[1000]! ^= 0x01;
    writePiece(1, changed);

    expect(await store.read(1)).toBeUndefined();
    expect(store.has(1)).toBe(false);
    expect(heldList(store)).toEqual([0, 2]);
    expect(await store.read(1)).toBeUndefined();
    expect(onEvict.mock.calls).toEqual([[1]]);
    expect(same(await store.read(0), slice(image, manifest, 0))).toBe(true);
    await store.close();
  });

  it('with verifyOnRead off, serves what the disk holds (the receiver still checks every piece)', async () => {
    const store = new FilePieceStore({ path: file, manifest, verifyOnRead: false });
    writePiece(0);
    store.markWritten(0);
    const changed = Buffer.from(slice(image, manifest, 0));
    changed[0]! ^= 0xff;
    writePiece(0, changed);
    expect(same(await store.read(0), changed)).toBe(true);
    await store.close();
  });

  it('drops a piece the file no longer reaches (truncated)', async () => {
    const onEvict = vi.fn();
    const store = new FilePieceStore({ path: file, manifest, verifyOnRead: false, onEvict });
    writePiece(0);
    writePiece(2);
    store.markWritten(2);
    fs.truncateSync(file, pieceRange(manifest, 2).offset + 10);
    expect(await store.read(2)).toBeUndefined();
    expect(onEvict).toHaveBeenCalledWith(2);
  });

  it('a read of a missing file rejects, and a later read opens it again', async () => {
    const store = new FilePieceStore({ path: file, manifest });
    store.markWritten(0);
    await expect(store.read(0)).rejects.toMatchObject({ code: 'ENOENT' });
    writePiece(0);
    expect(same(await store.read(0), slice(image, manifest, 0))).toBe(true);
    await store.close();
  });

  it('serves nothing once closed', async () => {
    const store = new FilePieceStore({ path: file, manifest });
    writePiece(0);
    store.markWritten(0);
    expect(await store.read(0)).toBeDefined();
    await store.close();
    expect(store.has(0)).toBe(false);
    expect(await store.read(0)).toBeUndefined();
    store.markWritten(0);
    expect(store.held().count()).toBe(0);
  });
});

describe('RamWindowStore', () => {
  it('keeps pieces up to its byte bound, evicting the oldest; has() and held() follow', async () => {
    const m = shapeOnly(4 * MiB, 5);
    const onEvict = vi.fn();
    const store = new RamWindowStore({ manifest: m, maxBytes: 10 * MiB, onEvict });
    const pieces = [0, 1, 2, 3].map(() => randomBytes(4 * MiB));

    expect(store.put(0, pieces[0]!)).toBe(true);
    expect(store.put(1, pieces[1]!)).toBe(true);
    expect(store.bytes()).toBe(8 * MiB);
    expect(heldList(store)).toEqual([0, 1]);
    expect(onEvict).not.toHaveBeenCalled();

    expect(store.put(2, pieces[2]!)).toBe(true);
    expect(onEvict.mock.calls).toEqual([[0]]);
    expect(store.has(0)).toBe(false);
    expect(await store.read(0)).toBeUndefined();
    expect(heldList(store)).toEqual([1, 2]);
    expect(store.bytes()).toBe(8 * MiB);
    // Not re-verified, not copied: the buffer the peer verified and stored.
    expect(await store.read(2)).toBe(pieces[2]);

    expect(store.put(2, pieces[2]!)).toBe(true); // already held: nothing moves
    expect(store.bytes()).toBe(8 * MiB);
    expect(store.put(3, pieces[3]!)).toBe(true);
    expect(onEvict.mock.calls).toEqual([[0], [1]]);
    expect(heldList(store)).toEqual([2, 3]);
  });

  it('evicts as many pieces as a larger one needs, and counts the short last piece by its length', () => {
    const m: Manifest = { ...shapeOnly(4 * MiB, 3), size: 8 * MiB + 100 };
    const store = new RamWindowStore({ manifest: m, maxBytes: 8 * MiB + 100 });
    store.put(2, Buffer.alloc(100));
    store.put(0, Buffer.alloc(4 * MiB));
    store.put(1, Buffer.alloc(4 * MiB));
    expect(heldList(store)).toEqual([0, 1, 2]);
    expect(store.bytes()).toBe(8 * MiB + 100);
  });

  it('does not keep a piece larger than the whole window', () => {
    const m = shapeOnly(8 * MiB, 2);
    const onEvict = vi.fn();
    const store = new RamWindowStore({ manifest: m, maxBytes: 4 * MiB, onEvict });
    expect(store.put(0, Buffer.alloc(8 * MiB))).toBe(false);
    expect(store.has(0)).toBe(false);
    expect(store.bytes()).toBe(0);
    expect(onEvict).not.toHaveBeenCalled();
  });

  it('refuses a piece of the wrong length or index, and a bad bound', () => {
    const store = new RamWindowStore({ manifest: shapeOnly(4 * MiB, 2) });
    expect(store.maxBytes).toBe(RAM_WINDOW_DEFAULT_BYTES);
    expect(RAM_WINDOW_DEFAULT_BYTES).toBe(64 * MiB);
    expect(() => store.put(0, Buffer.alloc(100))).toThrow(RangeError);
    expect(() => store.put(2, Buffer.alloc(4 * MiB))).toThrow(RangeError);
    expect(() => store.put(-1, Buffer.alloc(4 * MiB))).toThrow(RangeError);
    expect(() => new RamWindowStore({ manifest: shapeOnly(4 * MiB, 2), maxBytes: -1 })).toThrow(RangeError);
    expect(() => new RamWindowStore({ manifest: shapeOnly(4 * MiB, 2), maxBytes: 1.5 })).toThrow(RangeError);
  });
});
