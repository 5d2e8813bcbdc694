// The seed peer (issue #13 §3), inside `dragonfly serve`: normally the only reader of the origin (the
// template's image URL). prepare() reads the image once, building its manifest in the same pass, so the
// manifest exists only for bytes whose whole sha256 is the template's; the pieces go into a bounded LRU
// cache on the way. piece() answers from that cache, or re-reads just that piece with a ranged GET and
// verifies it against the manifest before anyone sees it. Trust: template → manifest → piece (docs/p2p.md).
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { DragonflyError } from '../schemas/errors.js';
import { ManifestBuilder, parseManifest, pieceRange, verifyPiece, type Manifest } from './manifest.js';
import { PieceCache, PieceSpool } from './seed-cache.js';
import { OriginSlots, originError, readOrigin, shownUrl, type OriginConsumer, type OriginRead, type OriginTimeouts } from './seed-origin.js';

export type { Manifest, OriginTimeouts };

export interface SeedLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

export interface SeedOptions {
  /** pieces/ (the LRU cache) and manifests/ live here; both are rebuilt from disk at startup. */
  cacheDir: string;
  /** Bytes of pieces kept on disk; 0 keeps none (every piece() after prepare is a ranged origin read). */
  maxCacheBytes: number;
  fetch?: typeof fetch;
  log?: SeedLog;
  /** Origin reads at once, prepare's streaming reads included. Default 4. */
  originConcurrency?: number;
  /** Default: 10 s to the response headers, 30 s of silence mid-body. */
  timeouts?: Partial<OriginTimeouts>;
}

/** What the scheduler's `GET …/manifest` answers from: 200 ready, 202 preparing, the error when failed. */
export type SeedImageStatus =
  | { state: 'unknown' }
  | { state: 'preparing' }
  | { state: 'ready'; manifest: Manifest }
  | { state: 'failed'; error: DragonflyError };

export interface SeedStats {
  /** Body bytes received from the origin, every read counted. */
  originBytes: number;
  /** GET requests sent to the origin. */
  originRequests: number;
  /** Bytes of pieces in the cache now. */
  cacheBytes: number;
  /** piece() answered from the cache. */
  cacheHits: number;
  /** Pieces dropped from the cache for room (at startup too, when maxCacheBytes shrank). */
  evictions: number;
}

export interface SeedImage {
  url: string;
  /** The template's sha256 of the image as served. */
  sha256: string;
  /** Bytes as served, when known; otherwise the origin's Content-Length (it is needed before the first byte). */
  size?: number;
}

interface ImageEntry {
  /** Where pieces are re-read from: the last URL prepare() was given (any URL serving these bytes will do). */
  url: string | undefined;
  status: SeedImageStatus;
  preparing?: Promise<Manifest>;
}

const DIGEST = /^[0-9a-f]{64}$/;
const MANIFEST_FILE = /^([0-9a-f]{64})\.json$/;

export class Seed {
  readonly #manifestDir: string;
  readonly #cache: PieceCache;
  readonly #fetch: typeof fetch;
  readonly #log: SeedLog | undefined;
  readonly #timeouts: OriginTimeouts;
  readonly #slots: OriginSlots;
  readonly #closing = new AbortController();
  readonly #images = new Map<string, ImageEntry>();
  /** Origin reads of single pieces, by piece sha256: concurrent askers share one. */
  readonly #pieceReads = new Map<string, Promise<Buffer>>();
  /** Everything in flight, for close() to wait on. */
  readonly #inFlight = new Set<Promise<unknown>>();
  readonly #stats = { originBytes: 0, originRequests: 0, cacheHits: 0 };

  constructor(opts: SeedOptions) {
    this.#fetch = opts.fetch ?? fetch;
    this.#log = opts.log;
    this.#timeouts = { connectMs: opts.timeouts?.connectMs ?? 10_000, readMs: opts.timeouts?.readMs ?? 30_000 };
    this.#slots = new OriginSlots(opts.originConcurrency ?? 4);
    this.#cache = new PieceCache({ dir: path.join(opts.cacheDir, 'pieces'), maxBytes: opts.maxCacheBytes, ...(opts.log ? { log: opts.log } : {}) });
    this.#manifestDir = path.join(opts.cacheDir, 'manifests');
    this.#loadManifests();
  }

  /**
   * The manifest of an image, read from the origin once and verified whole against `image.sha256`
   * (DF_ERR_IMAGE_SHA256 otherwise, and nothing is kept). Concurrent calls for one image share the read;
   * a prepared image answers at once, after a restart too.
   */
  async prepare(image: SeedImage): Promise<Manifest> {
    this.#checkOpen();
    const sha256 = image.sha256.toLowerCase();
    if (!DIGEST.test(sha256)) throw new DragonflyError('DF_ERR_SHA256', `not a sha256: ${JSON.stringify(image.sha256.slice(0, 80))}`);
    const entry = this.#images.get(sha256);
    if (entry?.status.state === 'ready') return this.#alreadyReady(entry, entry.status.manifest, image);
    if (entry?.preparing) return entry.preparing;
    const preparing = this.#track(this.#readImage(sha256, image)).then(
      (manifest) => {
        this.#images.set(sha256, { url: image.url, status: { state: 'ready', manifest } });
        return manifest;
      },
      (e: unknown) => {
        const error = asDragonflyError(e, image.url);
        this.#images.set(sha256, { url: image.url, status: { state: 'failed', error } });
        this.#log?.warn({ sha256, url: shownUrl(image.url), code: error.code, err: error.message }, 'seed: image not prepared');
        throw error;
      },
    );
    this.#images.set(sha256, { url: image.url, status: { state: 'preparing' }, preparing });
    return preparing;
  }

  manifest(sha256: string): Manifest | undefined {
    const status = this.status(sha256);
    return status.state === 'ready' ? status.manifest : undefined;
  }

  status(sha256: string): SeedImageStatus {
    return this.#images.get(sha256.toLowerCase())?.status ?? { state: 'unknown' };
  }

  /**
   * Piece `index` of a prepared image, verified against its manifest: from the cache, or else one ranged
   * origin read shared by every concurrent asker. The Buffer may be shared with them: read it, do not write it.
   */
  async piece(sha256: string, index: number): Promise<Buffer> {
    this.#checkOpen();
    const entry = this.#images.get(sha256.toLowerCase());
    if (entry?.status.state !== 'ready') {
      throw new DragonflyError('DF_ERR_P2P_NOT_PREPARED', `the seed has no manifest for image ${sha256.slice(0, 80)} (${entry?.status.state ?? 'unknown'})`, {
        sha256,
        state: entry?.status.state ?? 'unknown',
      });
    }
    const manifest = entry.status.manifest;
    pieceRange(manifest, index); // RangeError for an index the manifest does not have
    const pieceSha = manifest.pieces[index]!;
    const shared = this.#pieceReads.get(pieceSha);
    if (shared) return shared;
    const cached = await this.#cache.get(pieceSha);
    if (cached) {
      this.#stats.cacheHits++;
      return cached;
    }
    let read = this.#pieceReads.get(pieceSha);
    if (!read) {
      read = this.#track(this.#readPiece(entry, manifest, index)).finally(() => this.#pieceReads.delete(pieceSha));
      this.#pieceReads.set(pieceSha, read);
    }
    return read;
  }

  stats(): SeedStats {
    return { ...this.#stats, cacheBytes: this.#cache.bytes, evictions: this.#cache.evictions };
  }

  /** Aborts every origin read in flight and waits until they have cleaned up (temp files deleted). */
  async close(): Promise<void> {
    this.#closing.abort();
    await Promise.allSettled([...this.#inFlight]);
  }

  async #alreadyReady(entry: ImageEntry, manifest: Manifest, image: SeedImage): Promise<Manifest> {
    if (image.size !== undefined && image.size !== manifest.size) {
      throw new DragonflyError('DF_ERR_IMAGE_SHA256', `the image with sha256 ${manifest.sha256} has ${manifest.size} bytes, not the ${image.size} given`, {
        expected: image.size,
        actual: manifest.size,
      });
    }
    if (entry.url !== image.url) {
      // Same bytes (same sha256) from another URL: re-read pieces from where the template now points.
      entry.url = image.url;
      await this.#writeAtomically(this.#urlFile(manifest.sha256), image.url).catch((e: Error) => this.#log?.warn({ err: e.message }, 'seed: origin URL not saved'));
    }
    return manifest;
  }

  /** The one streaming read of the whole image: manifest built, whole sha256 checked, pieces spooled to the cache. */
  #readImage(sha256: string, image: SeedImage): Promise<Manifest> {
    return this.#origin(image.url, undefined, async (head, body) => {
      const size = image.size ?? head.length;
      if (size === undefined) {
        throw originError(image.url, 'no-length', `${shownUrl(image.url)} sends no Content-Length and no size was given: the piece length must be known before the first byte`);
      }
      if (head.length !== undefined && head.length !== size) {
        throw new DragonflyError('DF_ERR_IMAGE_SHA256', `${shownUrl(image.url)} announces ${head.length} bytes, the template's image has ${size}`, { expected: size, announced: head.length });
      }
      const builder = new ManifestBuilder({ size, expectedSha256: sha256 });
      const spool = new PieceSpool(this.#cache, size, builder.pieceLength);
      let manifest: Manifest;
      try {
        for await (const chunk of body) {
          builder.update(chunk); // throws, ending the read, as soon as the origin sends more than `size`
          await spool.write(chunk);
        }
        manifest = builder.finish();
      } catch (e) {
        await spool.discard();
        throw e;
      }
      const cached = await spool.commit(manifest.pieces);
      await this.#saveManifest(manifest, image.url).catch((e: Error) => this.#log?.warn({ sha256, err: e.message }, 'seed: manifest not saved; it is read again after a restart'));
      this.#log?.info({ sha256, size, pieces: manifest.pieces.length, cached }, 'seed: image prepared');
      return manifest;
    });
  }

  /** One piece by a ranged GET, refused unless it is exactly the manifest's piece. */
  async #readPiece(entry: ImageEntry, manifest: Manifest, index: number): Promise<Buffer> {
    const url = entry.url;
    if (url === undefined) {
      throw originError('', 'no-url', `no origin URL is known for image ${manifest.sha256}: prepare it again with its template's URL`, { sha256: manifest.sha256 });
    }
    const { offset, length } = pieceRange(manifest, index);
    const bytes = await this.#origin(url, { offset, length, size: manifest.size }, async (_head, body) => {
      const buffer = Buffer.allocUnsafe(length);
      let filled = 0;
      for await (const chunk of body) {
        // More than asked is wrong bytes: stop reading them.
        if (filled + chunk.byteLength > length) throw pieceMismatch(manifest, index, url, `more than the piece's ${length} bytes`);
        buffer.set(chunk, filled);
        filled += chunk.byteLength;
      }
      if (filled < length) throw originError(url, 'cut', `${shownUrl(url)} sent ${filled} of piece ${index}'s ${length} bytes`, { piece: index });
      return buffer;
    });
    if (!verifyPiece(manifest, index, bytes)) throw pieceMismatch(manifest, index, url, 'bytes whose sha256 is not the manifest\'s');
    await this.#cache.put(manifest.pieces[index]!, bytes);
    return bytes;
  }

  /** An origin read inside an origin slot, counted in the stats. */
  #origin<T>(url: string, range: OriginRead['range'], consume: OriginConsumer<T>): Promise<T> {
    return this.#slots.run(() => {
      this.#checkOpen();
      this.#stats.originRequests++;
      const read: OriginRead = {
        fetch: this.#fetch,
        timeouts: this.#timeouts,
        signal: this.#closing.signal,
        onBytes: (n) => {
          this.#stats.originBytes += n;
        },
        ...(range ? { range } : {}),
      };
      return readOrigin(url, read, consume);
    });
  }

  #track<T>(work: Promise<T>): Promise<T> {
    const settled = work.then(
      () => undefined,
      () => undefined,
    );
    this.#inFlight.add(settled);
    void settled.then(() => this.#inFlight.delete(settled));
    return work;
  }

  #checkOpen(): void {
    if (this.#closing.signal.aborted) throw originError('', 'closed', 'the seed is closed');
  }

  // Manifests on disk: manifests/<sha256>.json is exactly the manifest; <sha256>.url the origin to re-read from.

  async #saveManifest(manifest: Manifest, url: string): Promise<void> {
    await this.#writeAtomically(this.#urlFile(manifest.sha256), url);
    await this.#writeAtomically(path.join(this.#manifestDir, `${manifest.sha256}.json`), JSON.stringify(manifest));
  }

  async #writeAtomically(file: string, text: string): Promise<void> {
    const temp = `${file}.${randomBytes(6).toString('hex')}.tmp`;
    try {
      await fs.promises.writeFile(temp, text, { flag: 'wx' });
      await fs.promises.rename(temp, file);
    } catch (e) {
      await fs.promises.rm(temp, { force: true });
      throw e;
    }
  }

  #urlFile(sha256: string): string {
    return path.join(this.#manifestDir, `${sha256}.url`);
  }

  /** At startup: every saved manifest, re-checked as untrusted input; anything else in manifests/ is dropped. */
  #loadManifests(): void {
    fs.mkdirSync(this.#manifestDir, { recursive: true });
    const names = fs.readdirSync(this.#manifestDir);
    const kept = new Set<string>();
    for (const name of names) {
      const sha256 = MANIFEST_FILE.exec(name)?.[1];
      if (sha256 === undefined) continue;
      const file = path.join(this.#manifestDir, name);
      try {
        const manifest = parseManifest(JSON.parse(fs.readFileSync(file, 'utf8')), { sha256 });
        const urlFile = this.#urlFile(sha256);
        const url = fs.existsSync(urlFile) ? fs.readFileSync(urlFile, 'utf8') : undefined;
        this.#images.set(sha256, { url, status: { state: 'ready', manifest } });
        kept.add(name).add(`${sha256}.url`);
      } catch (e) {
        this.#log?.warn({ file, err: (e as Error).message }, 'seed: a saved manifest is unreadable; dropped, the image is read again when prepared');
      }
    }
    for (const name of names) if (!kept.has(name)) fs.rmSync(path.join(this.#manifestDir, name), { force: true, recursive: true });
  }
}

function pieceMismatch(manifest: Manifest, index: number, url: string, what: string): DragonflyError {
  return new DragonflyError('DF_ERR_P2P_PIECE_SHA256', `${shownUrl(url)} sent ${what} for piece ${index} of image ${manifest.sha256}: refused, not cached`, {
    sha256: manifest.sha256,
    piece: index,
    expected: manifest.pieces[index],
  });
}

/** Whatever a prepare failed with, as a typed error for status() (fetch and the file system throw plain ones). */
function asDragonflyError(e: unknown, url: string): DragonflyError {
  if (e instanceof DragonflyError) return e;
  return originError(url, 'unreachable', `preparing ${shownUrl(url)} failed: ${(e as Error)?.message ?? String(e)}`);
}
