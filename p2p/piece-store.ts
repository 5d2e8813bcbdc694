// Where a peer keeps the pieces it can serve while it is still downloading (issue #13, "Peer"): a raw image
// straight from the target disk by offset, a compressed one from a bounded RAM window. A store only ever holds
// pieces the peer has verified against the manifest; what it holds can shrink (the RAM window evicts, a file
// piece found changed is dropped), so held() — not the list of pieces the peer once stored — is what a peer
// announces, and onEvict tells it when something it announced is gone.
import { createHash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { Bitfield } from './bitfield.js';
import { pieceRange, type Manifest } from './manifest.js';

/** What the piece server needs of a peer's pieces. */
export interface PieceStore {
  /** True when read(i) would answer the piece now (it may still answer undefined if it is lost meanwhile). */
  has(i: number): boolean;
  /** The bytes of piece i, exactly as the manifest hashes them, or undefined when the store does not hold it. */
  read(i: number): Promise<Buffer | undefined>;
  /** A snapshot of the pieces held now, sized to the manifest: the truth for what a peer announces. */
  held(): Bitfield;
}

export interface FilePieceStoreOptions {
  /** The disk or file the raw image is written to, piece i at pieceRange(manifest, i).offset. */
  path: string;
  /** Where the image starts in the file (a partition at an offset of a disk image; default 0). */
  base?: number;
  manifest: Manifest;
  /**
   * Hash each piece again as it is read, and drop it (onEvict) when the disk no longer holds it (default true).
   * Mage is the only writer of the install disk, but it writes it again after image2disk: `writefile` and
   * `kexec` mount a partition (which alone rewrites a superblock) and change files while the machine keeps
   * serving its pieces for the rest of the rollout. Without this, those pieces would go out changed and every
   * receiver would blocklist this peer. One sha256 per piece served costs less CPU than sending it.
   */
  verifyOnRead?: boolean;
  /** Called once for each piece the store stops serving because its bytes on disk changed. */
  onEvict?: (i: number) => void;
}

/** Pieces of a raw image being written to a disk or file, read back by offset once marked written. */
export class FilePieceStore implements PieceStore {
  readonly path: string;
  readonly base: number;
  readonly manifest: Manifest;
  readonly #verifyOnRead: boolean;
  readonly #onEvict: ((i: number) => void) | undefined;
  readonly #written: Uint8Array;
  #file: Promise<FileHandle> | undefined;
  #closed = false;

  constructor(opts: FilePieceStoreOptions) {
    this.path = opts.path;
    this.base = opts.base ?? 0;
    this.manifest = opts.manifest;
    this.#verifyOnRead = opts.verifyOnRead ?? true;
    this.#onEvict = opts.onEvict;
    this.#written = new Uint8Array(opts.manifest.pieces.length);
  }

  /** Piece i was verified against the manifest and its write to the file has completed: serve it from now on. */
  markWritten(i: number): void {
    pieceRange(this.manifest, i); // throws RangeError for a piece the image does not have
    if (!this.#closed) this.#written[i] = 1;
  }

  has(i: number): boolean {
    return isIndex(i, this.#written.length) && this.#written[i] === 1;
  }

  async read(i: number): Promise<Buffer | undefined> {
    if (!this.has(i)) return undefined;
    const { offset, length } = pieceRange(this.manifest, i);
    let bytes: Buffer;
    try {
      bytes = await readExactly(await this.#handle(), this.base + offset, length);
    } catch (e) {
      if (this.#closed) return undefined; // closed under a read in flight
      throw e;
    }
    if (bytes.length === length && (!this.#verifyOnRead || sha256(bytes) === this.manifest.pieces[i])) return bytes;
    // Shorter than the piece (the file was truncated) or other bytes than the manifest's: no longer held.
    this.#drop(i);
    return undefined;
  }

  held(): Bitfield {
    return bitfieldOf(this.#written.length, (i) => this.#written[i] === 1);
  }

  /** Stops serving (has() is false from now on) and closes the file. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#written.fill(0);
    const file = this.#file;
    this.#file = undefined;
    if (file) await file.then((f) => f.close()).catch(() => undefined);
  }

  #handle(): Promise<FileHandle> {
    // Opened once, on the first read, read-only: the writer keeps its own descriptor.
    if (!this.#file) {
      this.#file = open(this.path, 'r');
      this.#file.catch(() => (this.#file = undefined)); // the next read tries again
    }
    return this.#file;
  }

  #drop(i: number): void {
    if (this.#written[i] !== 1) return;
    this.#written[i] = 0;
    this.#onEvict?.(i);
  }
}

export interface RamWindowStoreOptions {
  manifest: Manifest;
  /** Bytes of pieces kept at most (default 64 MiB); the oldest stored piece goes first. */
  maxBytes?: number;
  /** Called for each piece evicted to make room, so the peer can tell the scheduler it no longer has it. */
  onEvict?: (i: number) => void;
}

export const RAM_WINDOW_DEFAULT_BYTES = 64 * 2 ** 20;

/**
 * Verified pieces of a compressed image, whose bytes are not on the disk as such, kept in RAM within a byte
 * bound: Mage runs from RAM, so the window must never grow with the image. Eviction is oldest-stored first:
 * pieces are stored roughly in write order, and the peers that still want a piece are those just behind.
 * Nothing is re-hashed on read: RAM holds what was verified when it was stored. A piece evicted while an
 * upload is sending it stays alive until that upload ends, so the bound can be passed by at most the pieces
 * of the uploads in flight.
 */
export class RamWindowStore implements PieceStore {
  readonly manifest: Manifest;
  readonly maxBytes: number;
  readonly #onEvict: ((i: number) => void) | undefined;
  /** Insertion order is eviction order. */
  readonly #pieces = new Map<number, Buffer>();
  #bytes = 0;

  constructor(opts: RamWindowStoreOptions) {
    const maxBytes = opts.maxBytes ?? RAM_WINDOW_DEFAULT_BYTES;
    if (!Number.isSafeInteger(maxBytes) || maxBytes < 0) throw new RangeError(`a RAM window needs a byte bound, not ${maxBytes}`);
    this.manifest = opts.manifest;
    this.maxBytes = maxBytes;
    this.#onEvict = opts.onEvict;
  }

  /**
   * Keeps piece i, which the caller has verified against the manifest; the buffer is kept as given, so the
   * caller must not change it afterwards. Evicts the oldest pieces to make room. False when the piece alone
   * is larger than the window (huge images have pieces of 8 MiB and more): it is then not kept at all.
   */
  put(i: number, bytes: Buffer): boolean {
    const { length } = pieceRange(this.manifest, i);
    if (bytes.length !== length) throw new RangeError(`piece ${i} is ${length} bytes, not ${bytes.length}`);
    if (this.#pieces.has(i)) return true;
    if (length > this.maxBytes) return false;
    while (this.#bytes + length > this.maxBytes) {
      const [oldest, kept] = this.#pieces.entries().next().value as [number, Buffer];
      this.#pieces.delete(oldest);
      this.#bytes -= kept.length;
      this.#onEvict?.(oldest);
    }
    this.#pieces.set(i, bytes);
    this.#bytes += length;
    return true;
  }

  has(i: number): boolean {
    return this.#pieces.has(i);
  }

  async read(i: number): Promise<Buffer | undefined> {
    return this.#pieces.get(i);
  }

  held(): Bitfield {
    return bitfieldOf(this.manifest.pieces.length, (i) => this.#pieces.has(i));
  }

  /** Bytes held now (at most maxBytes). */
  bytes(): number {
    return this.#bytes;
  }
}

function isIndex(i: number, pieces: number): boolean {
  return Number.isInteger(i) && i >= 0 && i < pieces;
}

function bitfieldOf(length: number, holds: (i: number) => boolean): Bitfield {
  const field = new Bitfield(length);
  for (let i = 0; i < length; i++) if (holds(i)) field.set(i);
  return field;
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Reads `length` bytes at `offset`, fewer only where the file ends. */
async function readExactly(file: FileHandle, offset: number, length: number): Promise<Buffer> {
  const out = Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const { bytesRead } = await file.read(out, got, length - got, offset + got);
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  return got === length ? out : out.subarray(0, got);
}
