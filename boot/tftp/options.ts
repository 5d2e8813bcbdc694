// RFC 2347 option negotiation for read requests: pure. Which options the server accepts, with which
// values, and the parameters the transfer then runs with.
import type { TftpOption } from './packet.js';

/** RFC 1350 §2: without a blksize option, blocks are 512 bytes. */
export const DEFAULT_BLKSIZE = 512;
/** RFC 2348: valid blksize values are 8–65464 octets. */
export const MIN_BLKSIZE = 8;
export const MAX_BLKSIZE = 65464;
/**
 * Default cap on blksize: 1468 = 1500 (Ethernet MTU) - 20 (IPv4) - 8 (UDP) - 4 (TFTP header), so one block
 * is one unfragmented Ethernet frame. PXE ROMs and some NICs drop or cannot reassemble IP fragments, and a
 * lost fragment loses the whole block; larger blocks are for networks known to carry them (jumbo frames,
 * loopback), where the operator raises `maxBlksize` and the client asks for more.
 */
export const DEFAULT_MAX_BLKSIZE = 1468;
/** RFC 7440 §3: windowsize 1–65535; without the option the window is 1 (RFC 1350 lock-step). */
export const MAX_WINDOWSIZE = 65535;
/**
 * Default cap on windowsize. A window is sent as a burst; 64 blocks of 1468 bytes (94 KB) fit the default
 * Linux UDP receive buffer (212992 bytes) of the client, and bound the memory of each transfer.
 */
export const DEFAULT_MAX_WINDOWSIZE = 64;

export interface NegotiationLimits {
  /** Largest blksize granted (clamped to 8–65464). */
  maxBlksize: number;
  /** Largest windowsize granted (clamped to 1–65535). */
  maxWindowsize: number;
}

export interface TransferParams {
  blksize: number;
  windowsize: number;
  /** RFC 2349 timeout in ms when the client negotiated one; otherwise the server's default applies. */
  timeoutMs?: number;
}

export interface Negotiation {
  params: TransferParams;
  /** Options to acknowledge, in request order. Empty: send no OACK and start with DATA 1 (RFC 2347 §2). */
  oack: TftpOption[];
}

/**
 * Decide which of a read request's options to accept. Unknown or malformed options are ignored (RFC 2347
 * §2: the server omits options it does not support); when an option repeats, the first one counts.
 */
export function negotiateOptions(requested: readonly TftpOption[], fileSize: number, limits: NegotiationLimits): Negotiation {
  const params: TransferParams = { blksize: DEFAULT_BLKSIZE, windowsize: 1 };
  const oack: TftpOption[] = [];
  const seen = new Set<string>();
  const maxBlksize = clamp(limits.maxBlksize, MIN_BLKSIZE, MAX_BLKSIZE);
  const maxWindowsize = clamp(limits.maxWindowsize, 1, MAX_WINDOWSIZE);

  for (const { name, value } of requested) {
    if (seen.has(name)) continue;
    const n = decimal(value);
    switch (name) {
      case 'blksize':
        // RFC 2348: the server may answer a smaller value than requested, never a larger one.
        if (n === undefined || n < MIN_BLKSIZE) continue;
        params.blksize = Math.min(n, maxBlksize);
        oack.push({ name, value: String(params.blksize) });
        break;
      case 'timeout':
        // RFC 2349 §2: 1–255 seconds; if accepted, the server echoes the same value.
        if (n === undefined || n < 1 || n > 255) continue;
        params.timeoutMs = n * 1000;
        oack.push({ name, value: String(n) });
        break;
      case 'tsize':
        // RFC 2349 §3: in a read request the client sends 0 and the server answers the file's size.
        if (n === undefined) continue;
        oack.push({ name, value: String(fileSize) });
        break;
      case 'windowsize':
        // RFC 7440 §3: 1–65535; the server may answer a smaller value.
        if (n === undefined || n < 1 || n > MAX_WINDOWSIZE) continue;
        params.windowsize = Math.min(n, maxWindowsize);
        oack.push({ name, value: String(params.windowsize) });
        break;
      default:
        continue; // RFC 2347 §2: unknown options are ignored
    }
    seen.add(name);
  }
  return { params, oack };
}

/** A plain decimal number (no sign, no spaces, no exponent); undefined otherwise. */
function decimal(s: string): number | undefined {
  return /^[0-9]{1,15}$/.test(s) ? Number(s) : undefined;
}

function clamp(n: number, lo: number, hi: number): number {
  return Number.isFinite(n) ? Math.min(hi, Math.max(lo, Math.floor(n))) : hi;
}
