// Helpers for tests that run real processes on real ports: a free port, a child's output, polling.
import type { ChildProcess } from 'node:child_process';
import net from 'node:net';

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

/** Everything a child writes to stdout and stderr, interleaved as it arrives. */
export function collect(child: ChildProcess): { text: () => string } {
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d));
  child.stderr?.on('data', (d: Buffer) => (out += d));
  return { text: () => out };
}

/** Poll `probe` until it holds; fail naming `what` after a generous deadline (no timing is asserted). */
export async function until(what: string, probe: () => boolean | Promise<boolean>, ms = 20_000, everyMs = 100): Promise<void> {
  const end = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** The exit code of a child, null when a signal ended it (waits for it, also when it already ended). */
export function exited(child: ChildProcess): Promise<number | null> {
  // A child killed by a signal keeps exitCode null: signalCode says it has ended, and its 'exit' may be past.
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((r) => child.once('exit', (code) => r(code)));
}
