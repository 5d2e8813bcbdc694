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
 * Longest client-requested timeout honoured, in seconds. A client that asks 255 s (the RFC 2349 maximum)
 * and never ACKs would hold its transfer slot for retries × 255 s; a boot client on the local segment needs
 * nothing like it, so longer requests are declined and the server's own adaptive wait applies.
 */
export const MAX_TIMEOUT_S = 5;
/** Default cap on windowsize. */
export const DEFAULT_MAX_WINDOWSIZE = 64;
/**
 * Cap on the payload of one window. A window leaves as one burst, and whatever does not fit the client's
 * socket receive buffer is dropped at every window, costing a timeout each time. Linux's default buffer is
 * 212992 bytes, and per-datagram kernel overhead takes up to half of it, so 64 KiB of payload fits with
 * room to spare: 1468-byte blocks get windows up to 44, 8192-byte blocks up to 8 (measured: atftp asking
 * 8192 × 16 on loopback lost the window's tail every time; 8192 × 8 loses nothing and is as fast).
 */
export const MAX_WINDOW_BYTES = 64 * 1024;

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
  /** Options to acknowledge, in request order. Empty: no OACK, DATA 1 first (RFC 2347, Negotiation Protocol). */
  oack: TftpOption[];
}

/**
 * Decide which of a read request's options to accept. Unknown or malformed options are ignored (RFC 2347,
 * Negotiation Protocol: the server omits options it does not support); of a repeated option, the first
 * valid one counts.
 */
export function negotiateOptions(requested: readonly TftpOption[], fileSize: number, limits: NegotiationLimits): Negotiation {
  const maxBlksize = clamp(limits.maxBlksize, MIN_BLKSIZE, MAX_BLKSIZE);
  const maxWindowsize = clamp(limits.maxWindowsize, 1, MAX_WINDOWSIZE);

  // First the valid requests, first occurrence of each name, in request order.
  const valid: { name: KnownOption; n: number }[] = [];
  for (const { name, value } of requested) {
    const n = decimal(value);
    if (n === undefined || !isKnown(name) || valid.some((v) => v.name === name) || !VALID[name](n)) continue;
    valid.push({ name, n });
  }
  const asked = (name: KnownOption) => valid.find((v) => v.name === name)?.n;

  // Then the granted values; the window depends on the block size, whatever the order of the options.
  const blksizeAsked = asked('blksize');
  const windowAsked = asked('windowsize');
  const timeoutAsked = asked('timeout');
  // RFC 2349, Timeout Interval Option: an accepted timeout "must match the value specified by the client", so
  // one above MAX_TIMEOUT_S cannot be answered with a smaller one: it is declined, i.e. omitted from the OACK
  // (RFC 2347, Negotiation Protocol), and the server keeps its own wait (TftpServerOptions.timeoutMs).
  const timeoutGranted = timeoutAsked !== undefined && timeoutAsked <= MAX_TIMEOUT_S ? timeoutAsked : undefined;
  // RFC 2348: the server may answer a smaller blksize than requested, never a larger one.
  const blksize = blksizeAsked === undefined ? DEFAULT_BLKSIZE : Math.min(blksizeAsked, maxBlksize);
  // RFC 7440 §3: likewise for windowsize; a window's payload also stays within MAX_WINDOW_BYTES.
  const windowsize =
    windowAsked === undefined ? 1 : Math.min(windowAsked, maxWindowsize, Math.max(1, Math.floor(MAX_WINDOW_BYTES / blksize)));
  const granted: Record<KnownOption, number> = {
    blksize,
    windowsize,
    timeout: timeoutGranted ?? 0, // RFC 2349, Timeout Interval Option: if accepted, the server echoes the same value
    tsize: fileSize, // RFC 2349, Transfer Size Option: in a read request the client sends 0 and the server answers the size
  };
  const params: TransferParams = { blksize, windowsize };
  if (timeoutGranted !== undefined) params.timeoutMs = timeoutGranted * 1000;
  const accepted = timeoutGranted === undefined ? valid.filter((v) => v.name !== 'timeout') : valid;
  return { params, oack: accepted.map(({ name }) => ({ name, value: String(granted[name]) })) };
}

type KnownOption = 'blksize' | 'timeout' | 'tsize' | 'windowsize';

/** Values a client may ask for; anything else makes the option invalid, and it is ignored. */
const VALID: Record<KnownOption, (n: number) => boolean> = {
  blksize: (n) => n >= MIN_BLKSIZE, // RFC 2348: 8–65464; larger requests are answered with the cap
  timeout: (n) => n >= 1 && n <= 255, // RFC 2349, Timeout Interval Option: 1–255 seconds
  tsize: () => true, // RFC 2349, Transfer Size Option: 0 in a read request; any size is answered with the real one
  windowsize: (n) => n >= 1 && n <= MAX_WINDOWSIZE, // RFC 7440 §3: 1–65535
};

const isKnown = (name: string): name is KnownOption => Object.hasOwn(VALID, name);

/** A plain decimal number (no sign, no spaces, no exponent); undefined otherwise. */
function decimal(s: string): number | undefined {
  return /^[0-9]{1,15}$/.test(s) ? Number(s) : undefined;
}

function clamp(n: number, lo: number, hi: number): number {
  return Number.isFinite(n) ? Math.min(hi, Math.max(lo, Math.floor(n))) : hi;
}
