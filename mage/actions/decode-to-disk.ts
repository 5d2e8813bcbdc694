// A native decompressor writing straight to the target: the decompressed bytes never pass through Node,
// which only carries (and hashes) the compressed stream. Relaying them through Node's event loop measured
// 0.45× `curl | zstd -dc` (bench/image2disk), a pipe into dd ~0.6×.
// - offset 0 (a disk, a partition device, a whole image file): the decompressor's stdout IS the target.
//   A regular file is bounded by RLIMIT_FSIZE (`ulimit -f`, the kernel stops the write at the capacity
//   with SIGXFSZ); a block device ends where it ends (ENOSPC). Progress is the shared file offset, read
//   from /proc/self/fdinfo.
// - a partition inside a disk image (offset > 0): piped into GNU dd, which seeks there and never writes
//   more than the capacity (count_bytes), so an image too large cannot spill into the next partition.
// Both are fsynced before success is reported.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import type { Writable } from 'node:stream';
import { Image2DiskError, type Target } from './target.js';

export interface DecodeToDisk {
  /** Write the compressed stream here; `end()` it when done. Writes after the pipeline stopped are dropped. */
  input: Writable;
  /** True once the decompressor can take no more input (it exited, or dd stopped it). */
  closed(): boolean;
  /** Resolves with the bytes written (fsynced), or rejects with what went wrong. */
  done: Promise<number>;
  /** Stop both processes (a failed download). */
  kill(): void;
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

function exitOf(child: ReturnType<typeof spawn>, name: string, onStderr?: (text: string) => void): Promise<Exit> {
  let stderr = '';
  child.stderr!.on('data', (d: Buffer) => {
    const text = d.toString();
    stderr = (stderr + text).slice(-4096);
    onStderr?.(text);
  });
  return new Promise((resolve, reject) => {
    child.once('error', (e) => reject(new Image2DiskError(`${name} could not start: ${e.message}`)));
    child.once('close', (code, signal) => resolve({ code, signal, stderr }));
  });
}

/** The byte count in dd's last `N bytes (…) copied` line (status=progress prints one a second and at the end). */
export function ddBytes(stderr: string): number | undefined {
  const all = [...stderr.matchAll(/(\d+) bytes\b/g)];
  return all.length ? Number(all.at(-1)![1]) : undefined;
}

export function decodeToDisk(command: readonly string[], target: Target, onBytes: (written: number) => void): DecodeToDisk {
  return target.offset === 0 && target.capacity % 512 === 0 ? decodeInPlace(command, target, onBytes) : decodeThroughDd(command, target, onBytes);
}

/** The file offset of our descriptor, which the child shares (same open file description). */
function filePosition(fd: number): number {
  const m = /^pos:\s+(\d+)/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'));
  return m ? Number(m[1]) : 0;
}

function decodeInPlace(command: readonly string[], target: Target, onBytes: (written: number) => void): DecodeToDisk {
  const [cmd] = command;
  const fd = fs.openSync(target.path, 'r+');
  const regular = fs.fstatSync(fd).isFile();
  // ulimit -f counts 512-byte blocks; the kernel refuses any write past it in this process (a regular file).
  const argv = regular ? ['sh', '-c', 'ulimit -f "$1" && shift && exec "$@"', 'sh', String(target.capacity / 512), ...command] : [...command];
  const decoder = spawn(argv[0]!, argv.slice(1), { stdio: ['pipe', fd, 'pipe'] });
  const input = decoder.stdin!;
  let closed = false;
  input.on('error', () => (closed = true));
  input.on('close', () => (closed = true));
  // Flush while decoding, so the final fsync has little left to write: the disk works in parallel with
  // the decompressor instead of after it (the final fsync of 1 GiB otherwise costs as much as decoding it).
  let flushing = false;
  const timer = setInterval(() => {
    onBytes(filePosition(fd));
    if (flushing) return;
    flushing = true;
    fs.fdatasync(fd, () => (flushing = false));
  }, 250);
  const exit = exitOf(decoder, cmd!);
  const done = (async () => {
    try {
      const d = await exit.finally(() => clearInterval(timer));
      const written = filePosition(fd);
      if (d.code !== 0) {
        if (d.signal === 'SIGXFSZ' || d.code === 128 + 25 || written >= target.capacity) {
          throw new Image2DiskError(`the image is larger than the target: more than ${target.capacity} bytes`);
        }
        throw new Image2DiskError(`${cmd} failed (exit ${d.code ?? d.signal}): ${lastLine(d.stderr) || 'corrupt or truncated image'}`);
      }
      await new Promise<void>((resolve, reject) => fs.fsync(fd, (e) => (e ? reject(new Image2DiskError(`fsync ${target.path}: ${e.message}`)) : resolve())));
      onBytes(written);
      return written;
    } finally {
      fs.closeSync(fd);
    }
  })();
  done.catch(() => {}); // observed by the caller after feeding; not an unhandled rejection meanwhile
  return { input, closed: () => closed, done, kill: () => decoder.kill('SIGKILL') };
}

function decodeThroughDd(command: readonly string[], target: Target, onBytes: (written: number) => void): DecodeToDisk {
  const [cmd, ...args] = command;
  const decoder = spawn(cmd!, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const dd = spawn(
    'dd',
    [
      `of=${target.path}`,
      'bs=4M',
      'iflag=fullblock,count_bytes',
      `count=${target.capacity}`,
      'oflag=seek_bytes',
      `seek=${target.offset}`,
      'conv=notrunc,fsync',
      'status=progress',
    ],
    { stdio: [decoder.stdout, 'ignore', 'pipe'] },
  );
  // dd holds its own copy of the pipe's read end; ours would keep the decompressor from seeing EPIPE.
  decoder.stdout.destroy();

  let closed = false;
  decoder.stdin.on('error', () => (closed = true)); // EPIPE: the decompressor is gone; its exit says why
  decoder.stdin.on('close', () => (closed = true));
  const decoderExit = exitOf(decoder, cmd!);
  const ddExit = exitOf(dd, 'dd', (text) => {
    const n = ddBytes(text);
    if (n !== undefined) onBytes(n);
  });

  const done = (async () => {
    const [d, w] = await Promise.all([decoderExit, ddExit]);
    const written = ddBytes(w.stderr) ?? 0;
    if (w.code !== 0) throw new Image2DiskError(`dd failed writing ${target.path} (exit ${w.code ?? w.signal}): ${lastLine(w.stderr)}`);
    if (d.code !== 0) {
      // dd stopped at the capacity and the decompressor had more: the image does not fit.
      if (written >= target.capacity) throw new Image2DiskError(`the image is larger than the target: more than ${target.capacity} bytes`);
      throw new Image2DiskError(`${cmd} failed (exit ${d.code ?? d.signal}): ${lastLine(d.stderr) || 'corrupt or truncated image'}`);
    }
    return written;
  })();
  done.catch(() => {}); // observed by the caller after feeding; not an unhandled rejection meanwhile
  return {
    input: decoder.stdin,
    closed: () => closed,
    done,
    kill: () => {
      decoder.kill('SIGKILL');
      dd.kill('SIGKILL');
    },
  };
}

function lastLine(text: string): string {
  return (
    text
      .split(/[\r\n]+/)
      .map((l) => l.trim())
      .filter(Boolean)
      .at(-1) ?? ''
  );
}
