// The seed's piece cache on disk: content-addressed files (pieces/<sha256 of the piece>), bounded by
// maxBytes, evicted by least recent use. A file is written under a temp name and renamed, so a name always
// holds a whole write; and it is hashed again on every read, so a file damaged on disk is never served:
// it is deleted and the caller fetches the piece again. Recency survives a restart as the files' mtimes.
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

const PIECE_NAME = /^[0-9a-f]{64}$/;

export interface CacheLog {
  warn(obj: object, msg: string): void;
}

export class PieceCache {
  readonly dir: string;
  readonly maxBytes: number;
  readonly #log: CacheLog | undefined;
  /** Piece sha256 → bytes, least recently used first (a Map iterates in insertion order). */
  readonly #entries = new Map<string, number>();
  #bytes = 0;
  /** Room promised to pieces being written (reserve → commit or release), counted against maxBytes. */
  #reserved = 0;
  evictions = 0;

  /** Scans `dir` (synchronously: once, at startup) to rebuild the LRU from the files' mtimes; temp files are dropped. */
  constructor(opts: { dir: string; maxBytes: number; log?: CacheLog }) {
    if (!Number.isSafeInteger(opts.maxBytes) || opts.maxBytes < 0) throw new RangeError(`maxCacheBytes must be a byte count, not ${opts.maxBytes}`);
    this.dir = opts.dir;
    this.maxBytes = opts.maxBytes;
    this.#log = opts.log;
    fs.mkdirSync(this.dir, { recursive: true });
    const found: { name: string; size: number; mtime: number }[] = [];
    for (const e of fs.readdirSync(this.dir, { withFileTypes: true })) {
      if (!e.isFile()) continue;
      const file = path.join(this.dir, e.name);
      // Temp files of writes a crash interrupted, or anything else: only whole, named pieces stay.
      if (!PIECE_NAME.test(e.name)) fs.rmSync(file, { force: true });
      else {
        const st = fs.statSync(file);
        found.push({ name: e.name, size: st.size, mtime: st.mtimeMs });
      }
    }
    found.sort((a, b) => a.mtime - b.mtime);
    for (const f of found) {
      this.#entries.set(f.name, f.size);
      this.#bytes += f.size;
    }
    // A smaller maxBytes than the last run's: the least recently used go now.
    for (const name of this.#evictFor(0)) fs.rmSync(this.#file(name), { force: true });
  }

  get bytes(): number {
    return this.#bytes;
  }

  /** The piece's bytes when the cache holds them intact (and then it becomes the most recently used). */
  async get(sha256: string): Promise<Buffer | undefined> {
    if (!this.#entries.has(sha256)) return undefined;
    const file = this.#file(sha256);
    let bytes: Buffer;
    try {
      bytes = await fs.promises.readFile(file);
    } catch (e) {
      // Evicted while we looked (or deleted by hand): a miss.
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
      this.#forget(sha256);
      return undefined;
    }
    if (createHash('sha256').update(bytes).digest('hex') !== sha256) {
      this.#log?.warn({ piece: sha256, file }, 'seed cache: a piece file does not match its sha256; deleted, to be fetched again');
      this.#forget(sha256);
      await fs.promises.rm(file, { force: true });
      return undefined;
    }
    if (this.#entries.has(sha256)) {
      this.#entries.delete(sha256);
      this.#entries.set(sha256, bytes.byteLength);
    }
    // The mtime carries recency across a restart; a failure only costs order.
    const now = new Date();
    await fs.promises.utimes(file, now, now).catch(() => undefined);
    return bytes;
  }

  /** Promise room for `bytes` more, evicting the least recently used pieces; false when even an empty cache is too small. */
  async reserve(bytes: number): Promise<boolean> {
    if (this.#reserved + bytes > this.maxBytes) return false;
    const evicted = this.#evictFor(bytes);
    this.#reserved += bytes;
    await Promise.all(evicted.map((name) => fs.promises.rm(this.#file(name), { force: true })));
    return true;
  }

  release(bytes: number): void {
    this.#reserved -= bytes;
  }

  /** A fresh temp name beside the pieces (same filesystem, so the rename is atomic); dropped at startup if left. */
  tempFile(): string {
    return path.join(this.dir, `.tmp-${process.pid}-${randomBytes(6).toString('hex')}`);
  }

  /** A reserved, fully written temp file becomes the piece `sha256` (whose bytes it must hold: verified upstream). */
  async commit(temp: string, sha256: string, bytes: number): Promise<void> {
    this.#reserved -= bytes;
    if (this.#entries.has(sha256)) {
      // Content-addressed: the same piece (another image's, or a run of zeros) is already here.
      this.#entries.delete(sha256);
      this.#entries.set(sha256, bytes);
      await fs.promises.rm(temp, { force: true });
      return;
    }
    await fs.promises.rename(temp, this.#file(sha256));
    this.#entries.set(sha256, bytes);
    this.#bytes += bytes;
  }

  /** Keep a verified piece if there is room for it; a failed write only means it is not cached. */
  async put(sha256: string, bytes: Uint8Array): Promise<void> {
    if (this.#entries.has(sha256) || !(await this.reserve(bytes.byteLength))) return;
    const temp = this.tempFile();
    try {
      await fs.promises.writeFile(temp, bytes, { flag: 'wx' });
      await this.commit(temp, sha256, bytes.byteLength);
    } catch (e) {
      this.release(bytes.byteLength);
      await fs.promises.rm(temp, { force: true });
      this.#log?.warn({ piece: sha256, err: (e as Error).message }, 'seed cache: a piece could not be stored');
    }
  }

  /** Drop the least recently used entries until `incoming` more bytes fit; returns their names (files to delete). */
  #evictFor(incoming: number): string[] {
    const evicted: string[] = [];
    for (const [name] of this.#entries) {
      if (this.#bytes + this.#reserved + incoming <= this.maxBytes) break;
      this.#forget(name);
      this.evictions++;
      evicted.push(name);
    }
    return evicted;
  }

  #forget(sha256: string): void {
    const size = this.#entries.get(sha256);
    if (size === undefined) return;
    this.#entries.delete(sha256);
    this.#bytes -= size;
  }

  #file(sha256: string): string {
    return path.join(this.dir, sha256);
  }
}

/**
 * The pieces of an image being prepared, written to temp files while the image streams past (memory holds
 * a chunk, not a piece). Their names are known only when the manifest is: commit() renames them to their
 * sha256 once the whole image is verified, discard() deletes them otherwise. A piece without room is skipped.
 */
export class PieceSpool {
  readonly #cache: PieceCache;
  readonly #size: number;
  readonly #pieceLength: number;
  #index = 0;
  #inPiece = 0;
  #open: { temp: string; fh: fs.promises.FileHandle } | undefined;
  readonly #written = new Map<number, string>();
  #reserved = 0;
  #failed = false;

  constructor(cache: PieceCache, size: number, pieceLength: number) {
    this.#cache = cache;
    this.#size = size;
    this.#pieceLength = pieceLength;
  }

  async write(chunk: Uint8Array): Promise<void> {
    for (let at = 0; at < chunk.byteLength; ) {
      const length = this.#lengthOf(this.#index);
      if (this.#inPiece === 0) await this.#startPiece(length);
      const take = Math.min(length - this.#inPiece, chunk.byteLength - at);
      if (this.#open) await this.#append(chunk.subarray(at, at + take));
      at += take;
      this.#inPiece += take;
      if (this.#inPiece === length) {
        await this.#endPiece();
        this.#index++;
        this.#inPiece = 0;
      }
    }
  }

  /** Every written piece goes into the cache under its name in the manifest. Returns how many were kept. */
  async commit(pieces: readonly string[]): Promise<number> {
    let kept = 0;
    for (const [index, temp] of this.#written) {
      const length = this.#lengthOf(index);
      this.#reserved -= length;
      try {
        await this.#cache.commit(temp, pieces[index]!, length);
        kept++;
      } catch {
        await fs.promises.rm(temp, { force: true });
      }
    }
    this.#written.clear();
    return kept;
  }

  async discard(): Promise<void> {
    if (this.#open) await this.#closeOpen(false);
    await Promise.all([...this.#written.values()].map((temp) => fs.promises.rm(temp, { force: true })));
    this.#written.clear();
    this.#cache.release(this.#reserved);
    this.#reserved = 0;
  }

  #lengthOf(index: number): number {
    return Math.min(this.#pieceLength, this.#size - index * this.#pieceLength);
  }

  async #startPiece(length: number): Promise<void> {
    if (this.#failed || !(await this.#cache.reserve(length))) return;
    this.#reserved += length;
    const temp = this.#cache.tempFile();
    try {
      this.#open = { temp, fh: await fs.promises.open(temp, 'wx') };
    } catch {
      this.#stopCaching(length);
    }
  }

  async #append(bytes: Uint8Array): Promise<void> {
    const open = this.#open!;
    try {
      for (let done = 0; done < bytes.byteLength; ) done += (await open.fh.write(bytes, done, bytes.byteLength - done)).bytesWritten;
    } catch {
      // A full or failing disk costs the cache, never the image: the read goes on uncached.
      await this.#closeOpen(false);
      this.#stopCaching(this.#lengthOf(this.#index));
    }
  }

  async #endPiece(): Promise<void> {
    if (this.#open) await this.#closeOpen(true);
  }

  async #closeOpen(keep: boolean): Promise<void> {
    const { temp, fh } = this.#open!;
    this.#open = undefined;
    await fh.close().catch(() => undefined);
    if (keep) this.#written.set(this.#index, temp);
    else await fs.promises.rm(temp, { force: true });
  }

  #stopCaching(length: number): void {
    this.#failed = true;
    this.#reserved -= length;
    this.#cache.release(length);
  }
}
