// Rate limits for peers' uploads and downloads (`--upload-limit 20MB/s`): the text a user writes, and the
// token bucket that enforces it.
import { DragonflyError } from '../schemas/errors.js';

// Units exactly as written: k/K, M, G, T are powers of 1000; Ki, Mi, Gi, Ti powers of 1024. B is a byte,
// bit a bit. "Mb" and "mb" are refused: whether b means bits or bytes is the classic confusion.
const RATE = /^(\d+(?:\.\d+)?) ?(k|K|M|G|T|Ki|Mi|Gi|Ti)?(B|bit)\/s$/;
const PREFIX: Record<string, number> = { k: 1e3, K: 1e3, M: 1e6, G: 1e9, T: 1e12, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40 };

/** Bytes per second of a rate such as 20MB/s, 100Mbit/s, 1.5GiB/s; `0` or `unlimited` is no limit (Infinity). */
export function parseRate(text: string): number {
  const t = text.trim();
  if (t === '0' || t === 'unlimited') return Infinity;
  const m = RATE.exec(t);
  const bytes = m ? (Number(m[1]) * (m[2] ? PREFIX[m[2]]! : 1)) / (m[3] === 'bit' ? 8 : 1) : NaN;
  // "0MB/s" is refused rather than read as unlimited: whoever wrote it may have meant "send nothing".
  if (bytes === 0) throw new DragonflyError('DF_ERR_RATE', `a rate of zero: ${t}`, {}, 'write a rate above zero, or 0 or unlimited alone for no limit');
  if (!Number.isFinite(bytes)) throw new DragonflyError('DF_ERR_RATE', `not a rate: ${JSON.stringify(text.slice(0, 80))}`);
  return bytes;
}

/**
 * A token bucket. Tokens are bytes that may be sent now; they accrue at `rate` per second up to `burst`.
 * reserve() spends them at once, going below zero if need be (debt), and answers how long the refill takes
 * to bring the balance back to zero: a write larger than the burst is delayed in proportion to its size
 * instead of waiting forever for a full bucket, and whoever reserves after it queues behind its debt, so
 * over any long stretch no more than rate × time + burst bytes pass (as Go's x/time/rate Reserve).
 */
export class TokenBucket {
  /** Bytes per second; Infinity never waits. */
  readonly rate: number;
  /** Bytes that may go at once after a quiet spell. */
  readonly burst: number;
  readonly #now: () => number;
  #tokens: number;
  #last: number;

  /** `now` is a clock in milliseconds; the default is monotonic, so a wall-clock jump neither frees nor freezes the bucket. */
  constructor(opts: { rate: number; burst: number; now?: () => number }) {
    if (!(opts.rate > 0)) throw new RangeError(`a token bucket needs a rate above zero, not ${opts.rate}`);
    if (!(opts.burst > 0 && Number.isFinite(opts.burst))) throw new RangeError(`a token bucket needs a finite burst above zero, not ${opts.burst}`);
    this.rate = opts.rate;
    this.burst = opts.burst;
    this.#now = opts.now ?? (() => performance.now());
    this.#tokens = opts.burst;
    this.#last = this.#now();
  }

  /** Spends `bytes` now and returns the milliseconds to wait before sending them (0: send at once). */
  reserve(bytes: number): number {
    if (!(bytes >= 0 && Number.isFinite(bytes))) throw new RangeError(`cannot reserve ${bytes} bytes`);
    if (this.rate === Infinity) return 0;
    this.#refill();
    this.#tokens -= bytes;
    return this.#tokens >= 0 ? 0 : Math.ceil((-this.#tokens * 1000) / this.rate);
  }

  /** Waits until `bytes` may be sent; when the signal aborts the wait, the bytes are given back unsent. */
  async take(bytes: number, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    const wait = this.reserve(bytes);
    if (wait === 0) return;
    try {
      await sleep(wait, signal);
    } catch (e) {
      this.#tokens = Math.min(this.burst, this.#tokens + bytes);
      throw e;
    }
  }

  #refill(): void {
    const now = this.#now();
    if (now <= this.#last) return;
    this.#tokens = Math.min(this.burst, this.#tokens + ((now - this.#last) * this.rate) / 1000);
    this.#last = now;
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal!.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * The bucket for a rate limit as written (`--upload-limit 20MB/s`); none for no limit. A burst of a quarter
 * second (64 KiB to 4 MiB) lets bytes flow evenly.
 */
export function rateLimit(text: string | undefined): TokenBucket | undefined {
  if (text === undefined) return undefined;
  const rate = parseRate(text);
  if (rate === Infinity) return undefined;
  return new TokenBucket({ rate, burst: Math.max(64 * 1024, Math.min(4 * 2 ** 20, rate / 4)) });
}
