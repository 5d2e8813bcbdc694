// Test helpers for the TFTP server: a raw UDP peer that speaks packets one at a time (to provoke duplicate
// ACKs, foreign TIDs, refused OACKs…), and an async runner for real client processes.
import { spawn } from 'node:child_process';
import dgram, { type RemoteInfo } from 'node:dgram';
import { decodePacket, type TftpPacket } from './packet.js';

export interface Received {
  packet: TftpPacket;
  from: { address: string; port: number };
}

/** A UDP socket that queues what it receives; `next()` waits for the next packet. */
export class RawPeer {
  private readonly queue: (Received | Error)[] = [];
  private waiter: (() => void) | undefined;

  private constructor(private readonly socket: dgram.Socket) {
    socket.on('message', (msg: Buffer, rinfo: RemoteInfo) => {
      const decoded = decodePacket(msg);
      this.queue.push(
        decoded.ok
          ? { packet: decoded.packet, from: { address: rinfo.address, port: rinfo.port } }
          : new Error(`the server sent a malformed packet: ${decoded.error.message}`),
      );
      this.waiter?.();
    });
  }

  static async open(host = '127.0.0.1'): Promise<RawPeer> {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve) => socket.bind(0, host, resolve));
    return new RawPeer(socket);
  }

  get port(): number {
    return this.socket.address().port;
  }

  send(msg: Buffer, port: number, host = '127.0.0.1'): Promise<void> {
    return new Promise((resolve, reject) => this.socket.send(msg, port, host, (err) => (err ? reject(err) : resolve())));
  }

  /** The next packet, or a rejection after `timeoutMs` (a failing test, not a measurement). */
  async next(timeoutMs = 5000): Promise<Received> {
    const deadline = Date.now() + timeoutMs;
    while (this.queue.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no packet within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, left);
        this.waiter = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.waiter = undefined;
    }
    const item = this.queue.shift()!;
    if (item instanceof Error) throw item;
    return item;
  }

  /** How many packets were received and not yet taken. */
  get queued(): number {
    return this.queue.length;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.socket.close(() => resolve()));
  }
}

export interface ProcessResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Run a client process without blocking the event loop (the server under test lives in this process). */
export function runProcess(cmd: string, args: string[], timeoutMs = 120_000): Promise<ProcessResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** Poll `condition` until it holds; rejects after `timeoutMs`. */
export async function waitFor(condition: () => boolean, timeoutMs = 10_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}
