// Where a downloading peer's verified pieces go, and what its piece server serves them from (issue #13 §4):
// a raw image is written to its file or disk by offset as pieces arrive, and served back from there; a
// compressed one is handed on in order (to a decompressor: image2disk) and served from a bounded RAM window.
// Either way only verified pieces enter, and the whole image's sha256 is checked once more at the end.
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import { Bitfield } from './bitfield.js';
import { pieceRange, type Manifest } from './manifest.js';
import { FilePieceStore, RamWindowStore, RAM_WINDOW_DEFAULT_BYTES, type PieceStore } from './piece-store.js';

export type ImageOutput =
  /**
   * The raw image, written by offset. `atomic` (for a file): written to PATH.part, renamed to PATH only once the
   * whole image is verified, and the part file removed on failure, so nothing unfinished ever looks done.
   * Without it (a disk) the path is written in place, and holds only verified pieces; `offset` (default 0) is
   * where the image starts in it (a partition inside a disk image).
   */
  | { kind: 'file'; path: string; atomic?: boolean; offset?: number }
  /**
   * Pieces handed on strictly in order (a compressed image must reach its decompressor so); the next piece is
   * not handed on before the promise resolves. Other peers are served from a RAM window of `ramWindowBytes`
   * (default 64 MiB).
   */
  | { kind: 'stream'; onDeliver: (piece: number, bytes: Buffer) => Promise<void> | void; ramWindowBytes?: number };

/** What the peer does with pieces; `store` is what its piece server serves. */
export interface ImageSink {
  readonly store: PieceStore;
  /** Keeps a verified piece (file: written at its offset); it may be served once this resolves. */
  put(i: number, bytes: Buffer): Promise<void>;
  /** Hands piece i on: called once per piece, in order, after its put() resolved. */
  deliver(i: number): Promise<void>;
  /** The sha256 of every piece delivered, in order: after the last one, the whole image's. */
  digest(): string;
  /** The image is whole and verified: make it final (the atomic rename). Serving goes on. */
  commit(): Promise<void>;
  /** Stops serving and lets go; after a failure, an atomic file's part is removed. */
  close(failed: boolean): Promise<void>;
}

export async function openSink(output: ImageOutput, manifest: Manifest, onEvict: (i: number) => void): Promise<ImageSink> {
  return output.kind === 'file' ? FileSink.open(output.path, output.atomic ?? false, output.offset ?? 0, manifest) : new StreamSink(output, manifest, onEvict);
}

/** A piece store that can be pointed at another store (the file after its rename) under a running server. */
class SwitchableStore implements PieceStore {
  constructor(public target: PieceStore) {}
  has(i: number): boolean {
    return this.target.has(i);
  }
  read(i: number): Promise<Buffer | undefined> {
    return this.target.read(i);
  }
  held(): Bitfield {
    return this.target.held();
  }
}

class FileSink implements ImageSink {
  readonly store: SwitchableStore;
  readonly #hash = createHash('sha256');
  #files: FilePieceStore[];

  private constructor(
    readonly path: string,
    readonly partPath: string,
    readonly base: number,
    readonly manifest: Manifest,
    private handle: fs.FileHandle | undefined,
  ) {
    // A disk (written in place) is hashed again as pieces are read back to be served: Mage's next actions
    // change it, and a changed piece must not go out. A private part file nobody else writes is not: that
    // hash was a third sha256 of every byte a peer moves, and CPU is what bounds a swarm on one machine.
    const file = new FilePieceStore({ path: partPath, base, manifest, verifyOnRead: partPath === path });
    this.#files = [file];
    this.store = new SwitchableStore(file);
  }

  static async open(path: string, atomic: boolean, base: number, manifest: Manifest): Promise<FileSink> {
    if (atomic && base !== 0) throw new Error('an atomic output file starts at offset 0');
    const partPath = atomic ? `${path}.part` : path;
    // A part file starts empty and sparse at the image's size; a disk (or existing file) is written in place.
    const handle = atomic ? await fs.open(partPath, 'w+') : await fs.open(partPath, 'r+').catch(() => fs.open(partPath, 'w+'));
    if (atomic) await handle.truncate(manifest.size);
    return new FileSink(path, partPath, base, manifest, handle);
  }

  async put(i: number, bytes: Buffer): Promise<void> {
    const { offset } = pieceRange(this.manifest, i);
    const handle = this.#handle();
    for (let at = 0; at < bytes.length; ) {
      const { bytesWritten } = await handle.write(bytes, at, bytes.length - at, this.base + offset + at);
      at += bytesWritten;
    }
    this.#files[0]!.markWritten(i);
  }

  async deliver(i: number): Promise<void> {
    // Read back from the file, so the final sha256 is of what the file holds, not of what was meant to be written.
    const { offset, length } = pieceRange(this.manifest, i);
    const bytes = Buffer.allocUnsafe(length);
    let got = 0;
    while (got < length) {
      const { bytesRead } = await this.#handle().read(bytes, got, length - got, this.base + offset + got);
      if (bytesRead === 0) break;
      got += bytesRead;
    }
    this.#hash.update(bytes.subarray(0, got));
  }

  digest(): string {
    return this.#hash.digest('hex');
  }

  async commit(): Promise<void> {
    const handle = this.#handle();
    await handle.sync();
    this.handle = undefined;
    await handle.close();
    if (this.partPath === this.path) return;
    await fs.rename(this.partPath, this.path);
    // The part file's name is gone: serve from the final one, every piece, still re-hashed as read.
    const final = new FilePieceStore({ path: this.path, manifest: this.manifest });
    for (let i = 0; i < this.manifest.pieces.length; i++) final.markWritten(i);
    const old = this.#files[0]!;
    this.#files = [final];
    this.store.target = final;
    await old.close();
  }

  async close(failed: boolean): Promise<void> {
    await Promise.all(this.#files.map((f) => f.close()));
    const handle = this.handle;
    this.handle = undefined;
    await handle?.close().catch(() => undefined);
    if (failed && this.partPath !== this.path) await fs.rm(this.partPath, { force: true });
  }

  #handle(): fs.FileHandle {
    if (!this.handle) throw new Error('the output file is closed');
    return this.handle;
  }
}

class StreamSink implements ImageSink {
  readonly store: RamWindowStore;
  readonly #hash = createHash('sha256');
  /** Verified pieces not handed on yet: at most the picker's window. */
  readonly #waiting = new Map<number, Buffer>();
  readonly #onDeliver: (piece: number, bytes: Buffer) => Promise<void> | void;

  constructor(output: Extract<ImageOutput, { kind: 'stream' }>, manifest: Manifest, onEvict: (i: number) => void) {
    this.store = new RamWindowStore({ manifest, maxBytes: output.ramWindowBytes ?? RAM_WINDOW_DEFAULT_BYTES, onEvict });
    this.#onDeliver = output.onDeliver;
  }

  async put(i: number, bytes: Buffer): Promise<void> {
    this.store.put(i, bytes);
    this.#waiting.set(i, bytes);
  }

  async deliver(i: number): Promise<void> {
    const bytes = this.#waiting.get(i);
    if (!bytes) throw new Error(`piece ${i} was delivered before it was kept`);
    await this.#onDeliver(i, bytes);
    this.#hash.update(bytes);
    this.#waiting.delete(i);
  }

  digest(): string {
    return this.#hash.digest('hex');
  }

  async commit(): Promise<void> {}

  async close(): Promise<void> {
    this.#waiting.clear();
  }
}
