// One piece from one parent (a peer's piece server, the seed, or the image's origin by a Range request),
// paced by the download bucket, and checked against the manifest before anyone may use it: the result is
// `ok` only for exactly the piece's bytes. Nothing here throws: every way a request can end is an outcome.
import { pieceRange, verifyPiece, type Manifest } from './manifest.js';
import { causeOf } from './peer-client.js';
import type { TokenBucket } from './rate.js';

export type PieceFetchResult =
  | { kind: 'ok'; bytes: Buffer }
  | { kind: 'bad'; why: string } // bytes that are not the piece: the parent is blocklisted and reported
  | { kind: 'busy'; retryAfterMs: number } // 503: the parent is at its upload cap
  | { kind: 'failed'; why: string } // refused, reset, cut short, 404: try elsewhere
  | { kind: 'aborted' }; // cancelled here (timeout, endgame twin won, shutdown)

export interface PieceFetch {
  manifest: Manifest;
  index: number;
  /** A piece server's base URL (GET BASE/p2p/SHA/pieces/I), or, with `range`, the image's own URL. */
  url: string;
  /** The origin serves the whole image: ask for the piece's bytes with Range (RFC 9110 §14.2). */
  range?: boolean;
  /** The image's P2P token; never sent to the origin, which is not ours. */
  token?: string;
  bucket?: TokenBucket;
  signal: AbortSignal;
  /** Called as bytes arrive (the request is moving). */
  onBytes?: () => void;
}

export async function fetchPiece(f: PieceFetch): Promise<PieceFetchResult> {
  const { offset, length } = pieceRange(f.manifest, f.index);
  const url = f.range ? f.url : `${f.url}/p2p/${f.manifest.sha256}/pieces/${f.index}`;
  const headers: Record<string, string> = f.range ? { range: `bytes=${offset}-${offset + length - 1}`, 'accept-encoding': 'identity' } : {};
  if (f.token && !f.range) headers.authorization = `Bearer ${f.token}`;
  let res: Response;
  try {
    res = await fetch(url, { headers, signal: f.signal });
  } catch (e) {
    return f.signal.aborted ? { kind: 'aborted' } : { kind: 'failed', why: causeOf(e) };
  }
  const expected = f.range ? 206 : 200;
  if (res.status !== expected) {
    await res.body?.cancel().catch(() => undefined);
    if (res.status === 503) return { kind: 'busy', retryAfterMs: retryAfterMs(res.headers.get('retry-after')) };
    return { kind: 'failed', why: `HTTP ${res.status}` };
  }
  const announced = res.headers.get('content-length');
  if (announced !== null && Number(announced) !== length) {
    await res.body?.cancel().catch(() => undefined);
    return { kind: 'bad', why: `${announced} bytes announced for a piece of ${length}` };
  }
  const bytes = Buffer.allocUnsafe(length);
  let filled = 0;
  try {
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      if (filled + chunk.byteLength > length) return { kind: 'bad', why: `more than the piece's ${length} bytes` };
      await f.bucket?.take(chunk.byteLength, f.signal);
      bytes.set(chunk, filled);
      filled += chunk.byteLength;
      f.onBytes?.();
    }
  } catch (e) {
    return f.signal.aborted ? { kind: 'aborted' } : { kind: 'failed', why: `cut after ${filled} bytes: ${causeOf(e)}` };
  }
  if (filled < length) return { kind: 'failed', why: `cut after ${filled} of ${length} bytes` };
  // sha256 per piece against the manifest (trust: template → manifest → piece), never the sender's word.
  if (!verifyPiece(f.manifest, f.index, bytes)) return { kind: 'bad', why: "sha256 is not the manifest's" };
  return { kind: 'ok', bytes };
}

/** Retry-After in seconds (RFC 9110 §10.2.3), bounded; 1 s when absent or a date. */
function retryAfterMs(header: string | null): number {
  const s = Number(header);
  return Number.isFinite(s) && s >= 0 ? Math.min(30, s) * 1000 : 1000;
}
