// One read transfer on its own UDP socket (RFC 1350 §4: the server's new port is its transfer ID):
// OACK or DATA, windows of blocks (RFC 7440), retransmission on timeout, and exactly one ending.
import type { RemoteInfo, Socket } from 'node:dgram';
import type { TransferParams } from './options.js';
import { decodePacket, encodeDataHeader, encodeError, encodeOack, TFTP_ERROR, type TftpOption } from './packet.js';
import { RetransmitTimer } from './rto.js';
import type { TftpFile } from './source.js';
import { ackedBlock, blockCount, blockOffset, bytesThrough, windowEnd } from './window.js';

/** The pino methods the TFTP server uses; a pino logger fits. */
export interface TftpLog {
  debug(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export type TransferOutcome =
  | 'complete' // the last block was acknowledged
  | 'option-refused' // the client answered the OACK with ERROR 8: it only wanted the tsize (PXE ROMs do this)
  | 'client-error' // the client sent another ERROR
  | 'timeout' // no progress after the last retry
  | 'unconfirmed' // every block sent and all but the last acknowledged; the final ACK never came (RFC 1350 §6)
  | 'read-error' // the source failed, or the file shrank under the transfer
  | 'protocol-error' // the client sent a packet that has no place in a read transfer
  | 'socket-error' // the transfer's socket failed
  | 'superseded' // the same client restarted its request from the same port
  | 'closed'; // the server is shutting down

export interface TransferConfig {
  /** Bound, and connected to `peer`: every send goes to the peer, and only the peer's datagrams arrive. */
  socket: Socket;
  peer: { address: string; port: number };
  filename: string;
  file: TftpFile;
  params: TransferParams;
  /** Options to acknowledge first; empty: start with DATA 1. */
  oack: TftpOption[];
  /** Longest wait for an ACK (the first wait, before a round trip is measured). */
  timeoutMs: number;
  /** Timeouts at the longest wait, in a row, before the transfer is given up. */
  retries: number;
  log?: TftpLog;
  /** Payload bytes newly acknowledged by the client. */
  onProgress(bytes: number): void;
}

/**
 * Bytes read ahead from the source: one read serves several windows, so a lock-step transfer answers most
 * ACKs at once instead of waiting for the file system. A window is at most 64 KiB (options.ts), so one read
 * always covers a whole window.
 */
const READ_AHEAD = 128 * 1024;

export class Transfer {
  readonly done: Promise<TransferOutcome>;
  private resolveDone!: (o: TransferOutcome) => void;
  private readonly total: number;
  private phase: 'oack' | 'data' | 'ended' = 'data';
  /** Highest block the client has acknowledged (0: none). */
  private acked = 0;
  /** Highest block ever sent; ACKs above it acknowledge nothing. */
  private highestSent = 0;
  /** Bumped at every (re)send, so a window still being read stops once it is superseded. */
  private epoch = 0;
  private readonly rto: RetransmitTimer;
  private fullTimeouts = 0;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = 0;
  private deadline = Number.POSITIVE_INFINITY;
  /** The last (re)send: its last block, when it left, and whether it held only new blocks (for RTT samples). */
  private pass = { end: 0, sentAt: 0, fresh: false };
  /** File bytes from `start`; never written after the read, so slices may still sit in dgram's send queue. */
  private cache = { start: 0, bytes: Buffer.alloc(0) };

  constructor(private readonly cfg: TransferConfig) {
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
    this.total = blockCount(cfg.file.size, cfg.params.blksize);
    // A client's RFC 2349 timeout (at most MAX_TIMEOUT_S) is used as asked; otherwise the wait adapts to the round trip.
    const negotiated = cfg.params.timeoutMs;
    this.rto = negotiated === undefined ? new RetransmitTimer(cfg.timeoutMs) : new RetransmitTimer(negotiated, negotiated);
    cfg.socket.on('message', (msg, rinfo) => this.onMessage(msg, rinfo));
    cfg.socket.on('error', (err) => this.fail('socket-error', TFTP_ERROR.NOT_DEFINED, 'socket error', { err: err.message }));
  }

  /** True once the client has acknowledged anything: a repeated request is then a restart, not a retransmission. */
  get progressed(): boolean {
    return this.phase === 'data' && this.acked > 0;
  }

  start(): void {
    if (this.cfg.oack.length > 0) {
      this.phase = 'oack';
      this.sendOack();
    } else {
      void this.sendWindow(1);
    }
  }

  /** End the transfer from outside (shutdown, or a restart by the same client). */
  abort(outcome: 'superseded' | 'closed'): void {
    if (outcome === 'closed') this.end(outcome, { code: TFTP_ERROR.NOT_DEFINED, message: 'server shutting down' });
    else this.end(outcome);
  }

  private onMessage(msg: Buffer, rinfo: RemoteInfo): void {
    if (this.phase === 'ended') return;
    const { peer, socket } = this.cfg;
    if (rinfo.address !== peer.address || rinfo.port !== peer.port) {
      // The socket is connected to the peer, so the kernel drops foreign TIDs before they get here; should one
      // arrive anyway, it leaves this transfer alone.
      this.cfg.log?.debug({ file: this.cfg.filename, from: `${rinfo.address}:${rinfo.port}` }, 'tftp: packet from a foreign TID');
      return;
    }
    const decoded = decodePacket(msg);
    if (!decoded.ok) return this.fail('protocol-error', TFTP_ERROR.ILLEGAL_OPERATION, decoded.error.message);
    const packet = decoded.packet;
    switch (packet.op) {
      case 'ACK':
        return this.onAck(packet.block);
      case 'ERROR':
        // RFC 1350 §7: an ERROR is not acknowledged; it ends the transfer.
        if (packet.code === TFTP_ERROR.OPTION_REFUSED && this.phase === 'oack') {
          this.cfg.log?.debug({ file: this.cfg.filename, peer: peerText(peer) }, 'tftp: client refused the OACK (size probe)');
          return this.end('option-refused');
        }
        this.cfg.log?.info({ file: this.cfg.filename, peer: peerText(peer), code: packet.code, message: packet.message }, 'tftp: client aborted');
        return this.end('client-error');
      default:
        return this.fail('protocol-error', TFTP_ERROR.ILLEGAL_OPERATION, `unexpected ${packet.op} in a read transfer`);
    }
  }

  private onAck(wire: number): void {
    if (this.phase === 'oack') {
      // RFC 2347 Negotiation Protocol: the client acknowledges the OACK with ACK 0; then DATA 1 follows.
      if (wire !== 0) return;
      this.phase = 'data';
      this.progress(0);
      void this.sendWindow(1);
      return;
    }
    const block = ackedBlock(wire, this.acked, this.highestSent);
    if (block === undefined) return; // duplicate or stale: never resend on it (RFC 1123 §4.2.3.1)
    const { blksize } = this.cfg.params;
    const size = this.cfg.file.size;
    this.cfg.onProgress(bytesThrough(block, blksize, size) - bytesThrough(this.acked, blksize, size));
    this.acked = block;
    this.progress(block);
    if (block === this.total) return this.end('complete');
    // RFC 7440 §4: after the ACK of block n (end of window, or the last block received in order), go on from n+1.
    void this.sendWindow(block + 1);
  }

  private progress(block: number): void {
    if (block === this.pass.end && this.pass.fresh) this.rto.sample(performance.now() - this.pass.sentAt);
    this.rto.progress();
    this.fullTimeouts = 0;
  }

  private sendOack(): void {
    const { socket } = this.cfg;
    sendDatagram(socket, encodeOack(this.cfg.oack));
    this.pass = { end: 0, sentAt: performance.now(), fresh: this.pass.sentAt === 0 };
    this.arm();
  }

  /** Send blocks `first`..end of window, then wait for an ACK. */
  private async sendWindow(first: number): Promise<void> {
    const epoch = ++this.epoch;
    this.disarm();
    const { socket, params } = this.cfg;
    const { blksize } = params;
    const last = windowEnd(first, params.windowsize, this.total);
    const fresh = first > this.highestSent;
    const start = blockOffset(first, blksize);
    const end = Math.min(this.cfg.file.size, blockOffset(last + 1, blksize));
    let data = this.cached(start, end);
    if (!data) {
      try {
        data = await this.readAhead(start, end);
      } catch (err) {
        if (epoch === this.epoch) this.fail('read-error', TFTP_ERROR.NOT_DEFINED, 'read error', { err: String(err) });
        return;
      }
      if (epoch !== this.epoch || this.phase === 'ended') return;
      if (!data) return this.fail('read-error', TFTP_ERROR.NOT_DEFINED, 'file changed during the transfer');
    }
    for (let block = first; block <= last; block++) {
      const from = blockOffset(block, blksize) - start;
      const payload = data.subarray(Math.min(from, data.length), Math.min(from + blksize, data.length));
      sendDatagram(socket, [encodeDataHeader(block), payload]);
    }
    this.highestSent = Math.max(this.highestSent, last);
    this.pass = { end: last, sentAt: performance.now(), fresh };
    this.arm();
  }

  private cached(start: number, end: number): Buffer | undefined {
    const { start: at, bytes } = this.cache;
    return start >= at && end <= at + bytes.length ? bytes.subarray(start - at, end - at) : undefined;
  }

  /** Read `start`..`end` and beyond (READ_AHEAD); undefined when the file turned out shorter than its size. */
  private async readAhead(start: number, end: number): Promise<Buffer | undefined> {
    const length = Math.min(this.cfg.file.size - start, Math.max(end - start, READ_AHEAD));
    const bytes = Buffer.allocUnsafe(length); // a new buffer: the previous one may still be queued for sending
    if ((await readFully(this.cfg.file, bytes, start)) < length) return undefined;
    this.cache = { start, bytes };
    return bytes.subarray(0, end - start);
  }

  // One timer per transfer that moves only when it would fire too late: re-arming a timer for every block
  // was a timer-list insert and removal per ACK. `deadline` is when the wait for an ACK runs out.
  private arm(): void {
    const wait = this.rto.current();
    this.deadline = performance.now() + wait;
    if (this.timer && this.timerAt <= this.deadline) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.onTimer(), wait);
    this.timerAt = this.deadline;
  }

  private disarm(): void {
    this.deadline = Number.POSITIVE_INFINITY;
  }

  private onTimer(): void {
    this.timer = undefined;
    if (this.deadline === Number.POSITIVE_INFINITY) return;
    const left = this.deadline - performance.now();
    if (left >= 1) {
      this.timer = setTimeout(() => this.onTimer(), left);
      this.timerAt = this.deadline;
      return;
    }
    this.onTimeout();
  }

  private onTimeout(): void {
    if (this.phase === 'ended') return;
    // Early, adaptive retransmissions are free; the retry limit counts the waits that reached the maximum.
    if (this.rto.atMaximum() && ++this.fullTimeouts > this.cfg.retries) {
      return this.fail('timeout', TFTP_ERROR.NOT_DEFINED, `no acknowledgement after ${this.cfg.retries} retries`);
    }
    this.cfg.log?.debug(
      { file: this.cfg.filename, peer: peerText(this.cfg.peer), acked: this.acked, waitedMs: this.rto.current(), retry: this.fullTimeouts },
      'tftp: retransmitting',
    );
    this.rto.backoff();
    // Retransmit what is unacknowledged: the OACK, or the window after the last ACK.
    if (this.phase === 'oack') this.sendOack();
    else void this.sendWindow(this.acked + 1);
  }

  private fail(outcome: TransferOutcome, code: number, message: string, extra: Record<string, unknown> = {}): void {
    if (this.phase === 'ended') return;
    // RFC 1350 §6: the client may end its side on sending the final ACK, and that ACK can be lost. Its later
    // silence (a timeout) or its closed port (ECONNREFUSED from our retransmission) is then no failure of ours.
    if ((outcome === 'timeout' || outcome === 'socket-error') && this.phase === 'data' && this.total > 0 && this.acked === this.total - 1 && this.highestSent === this.total) {
      this.cfg.log?.info({ file: this.cfg.filename, peer: peerText(this.cfg.peer), ...extra }, 'tftp: last block sent, its acknowledgement never came');
      return this.end('unconfirmed');
    }
    this.cfg.log?.warn({ file: this.cfg.filename, peer: peerText(this.cfg.peer), outcome, ...extra }, `tftp: ${message}`);
    this.end(outcome, { code, message });
  }

  /** The one way out: stop timers, tell the client when it should know, close the socket and the file. */
  private end(outcome: TransferOutcome, error?: { code: number; message: string }): void {
    if (this.phase === 'ended') return;
    this.phase = 'ended';
    this.epoch++;
    this.disarm();
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const { socket, file } = this.cfg;
    const socketClosed = new Promise<void>((resolve) => {
      socket.once('close', resolve);
      const close = () => {
        try {
          socket.close();
        } catch {
          resolve(); // already closed
        }
      };
      // Close only once the ERROR has left: closing first would cancel the queued send.
      if (error) sendDatagram(socket, encodeError(error.code, error.message), undefined, close);
      else close();
    });
    const fileClosed = file.close().catch((err) => {
      this.cfg.log?.error({ file: this.cfg.filename, err: String(err) }, 'tftp: closing the file failed');
    });
    void Promise.all([socketClosed, fileClosed]).then(() => this.resolveDone(outcome));
  }
}

/** Send without throwing: a lost datagram is what retransmission is for. Without `to`, on a connected socket. */
export function sendDatagram(socket: Socket, msg: Buffer | Buffer[], to?: { address: string; port: number }, done?: () => void): void {
  try {
    // Without a callback, dgram drops send errors silently, and saves an allocation per datagram.
    if (to) {
      if (done) socket.send(msg, to.port, to.address, done);
      else socket.send(msg, to.port, to.address);
    } else if (done) socket.send(msg, done);
    else socket.send(msg);
  } catch {
    done?.(); // the socket is already closed
  }
}

async function readFully(file: TftpFile, buf: Buffer, position: number): Promise<number> {
  let filled = 0;
  while (filled < buf.length) {
    const n = await file.read(buf.subarray(filled), position + filled);
    if (n <= 0) break;
    filled += n;
  }
  return filled;
}

const peerText = (p: { address: string; port: number }) => `${p.address}:${p.port}`;

