// Dragonfly's read-only TFTP server (RFC 1350, with RFC 2347/2348/2349 options and RFC 7440 windows).
// The well-known port only takes requests; each accepted read runs on its own ephemeral socket.
import dgram, { type RemoteInfo, type Socket } from 'node:dgram';
import dns from 'node:dns';
import { isIP, isIPv6 } from 'node:net';
import { DEFAULT_MAX_BLKSIZE, DEFAULT_MAX_WINDOWSIZE, MAX_BLKSIZE, MAX_WINDOWSIZE, MIN_BLKSIZE, negotiateOptions } from './options.js';
import { decodePacket, encodeError, OPCODE, TFTP_ERROR, type TftpRequest } from './packet.js';
import { TftpAccessError, type TftpFile, type TftpSource } from './source.js';
import { throttledWarning } from './throttled-log.js';
import { sendDatagram, Transfer, type TftpLog, type TransferOutcome } from './transfer.js';

export type { TftpLog } from './transfer.js';

export interface TftpServerOptions {
  host: string;
  /** 69 in production; 0 picks a free port (tests). */
  port: number;
  source: TftpSource;
  /** Concurrent transfers; a request beyond it is refused as busy. Default 200. */
  maxTransfers?: number;
  /**
   * Concurrent transfers from one source address; a request beyond it is refused. Default 8: PXE firmware
   * and iPXE fetch one or two files at a time, and TFTP clients sit on the local segment, never several
   * machines behind one relay address. Without it, one host can hold every slot of `maxTransfers`.
   */
  maxTransfersPerHost?: number;
  /** Largest blksize granted (RFC 2348). Default 1468: one block per Ethernet frame (see options.ts). */
  maxBlksize?: number;
  /** Largest windowsize granted (RFC 7440). Default 64. */
  maxWindowsize?: number;
  /** Timeouts at the longest wait (`timeoutMs`), in a row, before a transfer is given up. Default 5. */
  retries?: number;
  /**
   * Longest wait for an ACK before retransmitting, and the first wait. Once a round trip is measured the
   * wait adapts (RFC 1123 §4.2.3.2) between 50 ms and this, backing off on each timeout. A client's RFC 2349
   * timeout option replaces it for that transfer when it is at most 5 s (MAX_TIMEOUT_S); a longer one is
   * declined. Default 1000 ms.
   */
  timeoutMs?: number;
  log?: TftpLog;
}

export interface TftpStats {
  /** Transfers started (the file was found and opened). */
  transfers: number;
  /** Requests being served now, including ones still opening their file. */
  active: number;
  /** Payload bytes acknowledged by clients (retransmissions are not counted twice). */
  bytes: number;
  /**
   * Refused requests (over `maxTransfers` or `maxTransfersPerHost` included), malformed datagrams, and
   * transfers that failed or that the client aborted.
   */
  errors: number;
  /**
   * Transfers whose every block was sent and all but the last acknowledged, after which the client went
   * quiet: its final ACK was lost (RFC 1350 §6 lets it leave on sending it). Not errors; their last block is
   * not in `bytes`.
   */
  unconfirmed: number;
}

export interface TftpServer {
  address(): { host: string; port: number };
  stats(): TftpStats;
  /** Stop listening, end every transfer, close every file and socket. */
  close(): Promise<void>;
}

/** Transfer outcomes that are not failures: a finished file, a PXE ROM that only wanted the size, a shutdown. */
const QUIET_OUTCOMES: ReadonlySet<TransferOutcome> = new Set(['complete', 'option-refused', 'superseded', 'closed']);

/** Longest error message sent to a client (a filename is echoed, and a request can be 64 KB). */
const MAX_ERROR_MESSAGE = 200;

interface Slot {
  /** The request as received: an identical request from the same port is a retransmission. */
  signature: string;
  transfer?: Transfer;
  cancelled: boolean;
}

export async function startTftpServer(opts: TftpServerOptions): Promise<TftpServer> {
  const maxTransfers = integerAtLeast('maxTransfers', opts.maxTransfers ?? 200, 1);
  const maxTransfersPerHost = integerAtLeast('maxTransfersPerHost', opts.maxTransfersPerHost ?? 8, 1);
  const retries = integerAtLeast('retries', opts.retries ?? 5, 0);
  const timeoutMs = integerAtLeast('timeoutMs', opts.timeoutMs ?? 1000, 1);
  const limits = {
    maxBlksize: inRange('maxBlksize', opts.maxBlksize ?? DEFAULT_MAX_BLKSIZE, MIN_BLKSIZE, MAX_BLKSIZE),
    maxWindowsize: inRange('maxWindowsize', opts.maxWindowsize ?? DEFAULT_MAX_WINDOWSIZE, 1, MAX_WINDOWSIZE),
  };
  const { host, source, log } = opts;
  const type = isIPv6(host) ? 'udp6' : 'udp4';

  const counters = { transfers: 0, active: 0, bytes: 0, errors: 0, unconfirmed: 0 };
  const slots = new Map<string, Slot>();
  /** Slots held per source address (all its ports); an address leaves the map with its last slot. */
  const perHost = new Map<string, number>();
  // One line per interval, not one per datagram: refusals come as fast as someone sends requests.
  const warnBusy = throttledWarning(log, 'tftp: too many transfers, requests refused');
  const warnHostLimit = throttledWarning(log, 'tftp: too many transfers from one host, requests refused');
  const running = new Set<Promise<void>>();
  let closing = false;

  // A burst of PXE clients sends its requests at once: a larger receive buffer keeps them from being dropped.
  const main = dgram.createSocket({ type, recvBufferSize: 1 << 20, lookup: literalLookup });
  main.on('error', (err) => log?.error({ err: err.message }, 'tftp: socket error on the request port'));
  main.on('message', (msg, rinfo) => {
    try {
      onDatagram(msg, rinfo);
    } catch (err) {
      counters.errors++;
      log?.error({ err: String(err), from: peerText(rinfo) }, 'tftp: request handling failed');
    }
  });
  try {
    await bindSocket(main, opts.port, host);
  } catch (err) {
    main.close();
    throw err; // EADDRINUSE, EACCES (port 69 without privilege)…: the caller names the flag to change
  }
  const bound = main.address();

  function onDatagram(msg: Buffer, rinfo: RemoteInfo): void {
    if (closing) return;
    const decoded = decodePacket(msg);
    if (!decoded.ok) {
      counters.errors++;
      log?.debug({ from: peerText(rinfo), reason: decoded.error.reason }, 'tftp: malformed datagram');
      // A broken request is answered (RFC 1350 §5 error 4); noise that is not even a request is dropped.
      const op = decoded.error.opcode;
      if (op === OPCODE.RRQ || op === OPCODE.WRQ) reply(rinfo, TFTP_ERROR.ILLEGAL_OPERATION, decoded.error.message);
      return;
    }
    const packet = decoded.packet;
    switch (packet.op) {
      case 'RRQ':
        return onReadRequest(packet, rinfo);
      case 'WRQ':
        counters.errors++;
        return reply(rinfo, TFTP_ERROR.ACCESS_VIOLATION, 'read-only server: writes are refused');
      case 'ERROR':
        return; // RFC 1350 §7: an error is never answered
      default:
        // DATA, ACK and OACK belong on a transfer's own port (RFC 1350 §4). Not an error worth counting:
        // tftp-hpa, for one, ACKs the ERROR that refused its request, to the port the ERROR came from.
        log?.debug({ from: peerText(rinfo), op: packet.op }, 'tftp: misdirected packet on the request port');
    }
  }

  function onReadRequest(request: TftpRequest, rinfo: RemoteInfo): void {
    if (request.mode !== 'octet') {
      // Boot files are binary; netascii conversion would change sizes and offsets, and "mail" is obsolete.
      counters.errors++;
      return reply(rinfo, TFTP_ERROR.ILLEGAL_OPERATION, `mode "${request.mode}" is not supported: use octet (binary)`);
    }
    const key = peerText(rinfo);
    const signature = JSON.stringify([request.filename, request.options]);
    const existing = slots.get(key);
    if (existing) {
      // The client re-sent its request because our first answer was slow or lost: the transfer's own
      // retransmission answers it. Once data was acknowledged, a new request from that port is a restart.
      if (existing.signature === signature && !existing.transfer?.progressed) return;
      existing.cancelled = true;
      existing.transfer?.abort('superseded');
    }
    // RFC 1350 has no "busy" code. Error 0 ("not defined, see message") says so in words; error 3 would
    // read "disk full" in most clients, which sends an operator the wrong way.
    const host = rinfo.address;
    // A restart from the same port does not count the slot it replaces (that transfer is ending).
    const fromHost = (perHost.get(host) ?? 0) - (existing ? 1 : 0);
    if (fromHost >= maxTransfersPerHost) {
      counters.errors++;
      warnHostLimit({ host, from: key, active: fromHost, maxTransfersPerHost });
      return reply(rinfo, TFTP_ERROR.NOT_DEFINED, `too many transfers from ${host} (${fromHost}): try again later`);
    }
    if (counters.active >= maxTransfers) {
      counters.errors++;
      warnBusy({ from: key, active: counters.active, maxTransfers });
      return reply(rinfo, TFTP_ERROR.NOT_DEFINED, `server busy (${counters.active} transfers): try again later`);
    }
    const slot: Slot = { signature, cancelled: false };
    slots.set(key, slot);
    counters.active++;
    perHost.set(host, (perHost.get(host) ?? 0) + 1);
    const task = serve(slot, request, rinfo)
      .catch((err) => {
        counters.errors++;
        log?.error({ file: request.filename, from: key, err: String(err) }, 'tftp: transfer failed');
      })
      .finally(() => {
        counters.active--;
        const left = (perHost.get(host) ?? 1) - 1;
        if (left > 0) perHost.set(host, left);
        else perHost.delete(host);
        if (slots.get(key) === slot) slots.delete(key);
        running.delete(task);
      });
    running.add(task);
  }

  async function serve(slot: Slot, request: TftpRequest, rinfo: RemoteInfo): Promise<void> {
    const peer = { address: rinfo.address, port: rinfo.port };
    const filename = request.filename;
    let file: TftpFile | undefined;
    try {
      file = await source.open(filename);
    } catch (err) {
      counters.errors++;
      if (err instanceof TftpAccessError) {
        log?.warn({ file: filename, from: peerText(peer), reason: err.reason }, 'tftp: access violation');
        return reply(rinfo, TFTP_ERROR.ACCESS_VIOLATION, err.message);
      }
      log?.error({ file: filename, from: peerText(peer), err: String(err) }, 'tftp: cannot open the file');
      return reply(rinfo, TFTP_ERROR.NOT_DEFINED, 'cannot read the file');
    }
    if (!file) {
      counters.errors++;
      log?.debug({ file: filename, from: peerText(peer) }, 'tftp: file not found');
      return reply(rinfo, TFTP_ERROR.FILE_NOT_FOUND, `${JSON.stringify(filename)}: file not found`);
    }
    if (slot.cancelled || closing) return file.close();

    const { params, oack } = negotiateOptions(request.options, file.size, limits);
    // RFC 1350 §4: a fresh port per transfer is the server's transfer ID.
    const socket = dgram.createSocket({ type, lookup: literalLookup });
    try {
      await bindSocket(socket, 0, host);
      // Connected to its client, as tftpd-hpa's are: the kernel drops datagrams from any other address or port
      // (RFC 1350 §4's foreign TIDs, answered with nothing, so they reflect nothing), and a send needs no
      // per-datagram route lookup — a lock-step transfer (what PXE ROMs do) is one send per round trip.
      await connectSocket(socket, peer.port, peer.address);
    } catch (err) {
      counters.errors++;
      socket.close();
      await file.close();
      log?.error({ file: filename, err: String(err) }, 'tftp: cannot open a transfer port');
      return reply(rinfo, TFTP_ERROR.NOT_DEFINED, 'no transfer port available');
    }
    counters.transfers++;
    const started = Date.now();
    const transfer = new Transfer({
      socket,
      peer,
      filename,
      file,
      params,
      oack,
      timeoutMs,
      retries,
      log,
      onProgress: (bytes) => (counters.bytes += bytes),
    });
    slot.transfer = transfer;
    log?.debug({ file: filename, peer: peerText(peer), size: file.size, ...params, oack: oack.length > 0 }, 'tftp: transfer started');
    transfer.start();
    if (slot.cancelled || closing) transfer.abort(closing ? 'closed' : 'superseded');
    const outcome = await transfer.done;
    if (outcome === 'unconfirmed') counters.unconfirmed++;
    else if (!QUIET_OUTCOMES.has(outcome)) counters.errors++;
    if (outcome === 'complete') {
      log?.info({ file: filename, peer: peerText(peer), bytes: file.size, ms: Date.now() - started, ...params }, 'tftp: file sent');
    }
  }

  /** Answer a request from the request port (refusals happen before any transfer port exists). */
  function reply(to: RemoteInfo, code: number, message: string): void {
    sendDatagram(main, encodeError(code, message.slice(0, MAX_ERROR_MESSAGE)), to);
  }

  return {
    address: () => ({ host: bound.address, port: bound.port }),
    stats: () => ({ ...counters }),
    async close() {
      if (closing) return;
      closing = true;
      await new Promise<void>((resolve) => main.close(() => resolve()));
      for (const slot of slots.values()) {
        slot.cancelled = true;
        slot.transfer?.abort('closed');
      }
      await Promise.all(running);
    },
  };
}

/**
 * Every address a TFTP socket sends to came from a received datagram: an IP literal. dgram would still look
 * it up before each send and send on the next tick; this answers at once (a round trip per block matters).
 * A name (only ever the address to bind) is looked up as dgram would.
 */
function literalLookup(address: string, opts: dns.LookupOneOptions, callback: (err: NodeJS.ErrnoException | null, address: string, family: number) => void): void {
  const family = isIP(address);
  if (family !== 0) return callback(null, address, family);
  dns.lookup(address, opts, callback); // a host name given to bind: looked up as dgram would
}

function connectSocket(socket: Socket, port: number, address: string): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.connect(port, address, () => {
      socket.off('error', reject);
      resolve();
    });
  });
}

function bindSocket(socket: Socket, port: number, address: string): Promise<void> {
  return new Promise((resolve, reject) => {
    socket.once('error', reject);
    socket.bind({ port, address, exclusive: true }, () => {
      socket.off('error', reject);
      resolve();
    });
  });
}

const peerText = (p: { address: string; port: number }) => `${p.address}:${p.port}`;

function integerAtLeast(name: string, value: number, min: number): number {
  if (!Number.isInteger(value) || value < min) throw new RangeError(`startTftpServer: ${name} must be an integer ≥ ${min}, got ${value}`);
  return value;
}

function inRange(name: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`startTftpServer: ${name} must be an integer in ${min}–${max}, got ${value}`);
  }
  return value;
}
