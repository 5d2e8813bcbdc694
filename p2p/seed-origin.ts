// The seed's reads of the origin (the template's image URL): one GET, whole or ranged, bounded by a connect
// timeout (until the response headers) and a read timeout (the longest wait for the next body chunk), and
// cancelled by the seed's close(). Every way the origin can fail is DF_ERR_P2P_ORIGIN, its `reason` in data.
import { DragonflyError } from '../schemas/errors.js';

export interface OriginTimeouts {
  /** From the request to the response headers. */
  connectMs: number;
  /** The longest wait for the next chunk of the body: a stalled origin is given up, a slow one is not. */
  readMs: number;
}

export type OriginFailure =
  | 'unreachable'
  | 'status'
  | 'timeout'
  | 'cut'
  | 'closed'
  | 'no-length'
  | 'encoded'
  | 'range-ignored'
  | 'content-range'
  | 'no-url';

export interface OriginRead {
  fetch: typeof fetch;
  timeouts: OriginTimeouts;
  /** The seed's close(): aborts the read wherever it is. */
  signal: AbortSignal;
  /** Ask for these bytes only (RFC 9110 §14.2); the answer must be 206 with the matching Content-Range. */
  range?: { offset: number; length: number; size: number };
  /** Body bytes as they arrive (the seed's origin byte count). */
  onBytes(n: number): void;
}

export interface OriginHead {
  /** Content-Length, when the origin sent one. */
  length: number | undefined;
}

export function originError(url: string, reason: OriginFailure, message: string, data: Record<string, unknown> = {}): DragonflyError {
  return new DragonflyError('DF_ERR_P2P_ORIGIN', message, { url: shownUrl(url), reason, ...data });
}

/** The URL as it may appear in messages and logs: credentials in it are replaced. */
export function shownUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.username || u.password) {
      u.username = '***';
      u.password = '';
    }
    return u.href;
  } catch {
    return url.slice(0, 200);
  }
}

export type OriginConsumer<T> = (head: OriginHead, body: AsyncIterable<Uint8Array>) => Promise<T>;

/**
 * GET `url` and hand its head and body to `consume`. The body is read only as fast as `consume` pulls it,
 * so memory stays at a chunk or two; when `consume` returns or throws early, the rest of the read is aborted.
 */
export async function readOrigin<T>(url: string, read: OriginRead, consume: OriginConsumer<T>): Promise<T> {
  const shown = shownUrl(url);
  const controller = new AbortController();
  // The first failure wins: after an abort, fetch's own error says only "aborted" or "terminated".
  let failure: DragonflyError | undefined;
  const fail = (e: DragonflyError) => {
    failure ??= e;
    controller.abort(e);
  };
  const onClose = () => fail(originError(url, 'closed', `the seed closed while reading ${shown}`));
  if (read.signal.aborted) throw originError(url, 'closed', `the seed is closed: ${shown} is not read`);
  read.signal.addEventListener('abort', onClose, { once: true });
  const { connectMs, readMs } = read.timeouts;
  let timer = setTimeout(() => fail(originError(url, 'timeout', `${shown} sent no answer within ${connectMs} ms`, { timeoutMs: connectMs })), connectMs);
  try {
    const range = read.range;
    const headers: Record<string, string> = { 'accept-encoding': 'identity' };
    if (range) headers.range = `bytes=${range.offset}-${range.offset + range.length - 1}`;
    let res: Response;
    try {
      res = await read.fetch(url, { headers, signal: controller.signal, redirect: 'follow' });
    } catch (e) {
      throw failure ?? originError(url, 'unreachable', `cannot read ${shown}: ${causeOf(e)}`);
    }
    clearTimeout(timer);
    const expected = range ? 206 : 200;
    if (res.status !== expected) {
      if (range && res.status === 200) {
        // Reading on to the piece would cost the origin every byte before it, for every piece: a quadratic
        // storm on the server the seed exists to protect. Refused at once, before any body byte is read.
        throw originError(url, 'range-ignored', `${shown} ignores Range requests (HTTP 200 for bytes ${range.offset}+${range.length}): the seed cannot re-read a piece it no longer caches`);
      }
      throw originError(url, 'status', `GET ${shown}${range ? ` (Range ${headers.range})` : ''}: HTTP ${res.status}`, { status: res.status });
    }
    const encoding = res.headers.get('content-encoding');
    if (encoding && encoding.toLowerCase() !== 'identity') {
      // fetch would decode it: the bytes hashed would not be the file's, nor match Content-Length.
      throw originError(url, 'encoded', `${shown} answers with Content-Encoding ${encoding} although identity was asked for`);
    }
    if (range) checkContentRange(url, res.headers.get('content-range'), range);
    const lengthText = res.headers.get('content-length');
    const length = lengthText !== null && /^\d+$/.test(lengthText) ? Number(lengthText) : undefined;

    const reader = res.body?.getReader();
    timer = setTimeout(() => fail(originError(url, 'timeout', `${shown} sent nothing for ${readMs} ms`, { timeoutMs: readMs })), readMs);
    async function* body(): AsyncGenerator<Uint8Array> {
      if (!reader) return;
      for (;;) {
        timer.refresh();
        let chunk: ReadableStreamReadResult<Uint8Array>;
        try {
          chunk = await reader.read();
        } catch (e) {
          throw failure ?? originError(url, 'cut', `${shown} broke off the answer: ${causeOf(e)}`);
        }
        if (chunk.done) return;
        read.onBytes(chunk.value.byteLength);
        yield chunk.value;
      }
    }
    return await consume({ length }, body());
  } finally {
    clearTimeout(timer);
    read.signal.removeEventListener('abort', onClose);
    // Harmless after a complete body; otherwise it stops the transfer instead of draining it.
    controller.abort();
  }
}

/** RFC 9110 §14.4: a 206 must say which bytes it holds; anything but the asked range of this size is refused. */
function checkContentRange(url: string, header: string | null, range: { offset: number; length: number; size: number }): void {
  const m = header === null ? null : /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header.trim());
  const last = range.offset + range.length - 1;
  if (!m || Number(m[1]) !== range.offset || Number(m[2]) !== last || (m[3] !== '*' && Number(m[3]) !== range.size)) {
    throw originError(url, 'content-range', `${shownUrl(url)} answered bytes ${range.offset}-${last}/${range.size} with Content-Range ${JSON.stringify(header)}: not the bytes asked for, or the image changed size`, {
      contentRange: header,
    });
  }
}

function causeOf(e: unknown): string {
  const err = e as { message?: string; cause?: { code?: string; message?: string } };
  const cause = err.cause?.code ?? err.cause?.message;
  return cause ? `${err.message ?? String(e)} (${cause})` : (err.message ?? String(e));
}

/** At most `limit` origin reads at once; the others wait their turn in order. */
export class OriginSlots {
  #active = 0;
  readonly #waiting: (() => void)[] = [];

  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new RangeError(`originConcurrency must be a positive integer, not ${limit}`);
  }

  async run<T>(task: () => Promise<T>): Promise<T> {
    if (this.#active >= this.limit) await new Promise<void>((resolve) => this.#waiting.push(resolve));
    else this.#active++;
    try {
      return await task();
    } finally {
      // The slot passes straight to the next waiter, so #active never dips and lets a newcomer jump the queue.
      const next = this.#waiting.shift();
      if (next) next();
      else this.#active--;
    }
  }
}
