// How commands talk to people: stdout for results, stderr for errors and prompts, colour only on a TTY.
import { isDragonflyError } from '../schemas/errors.js';

export interface Io {
  out: (text: string) => void;
  err: (text: string) => void;
  color: boolean;
}

export function processIo(noColor = false): Io {
  return {
    out: (t) => process.stdout.write(t),
    err: (t) => process.stderr.write(t),
    color: !noColor && !process.env.NO_COLOR && process.stdout.isTTY === true,
  };
}

/** Print an error the way every command does, and return the exit code. */
export function reportError(io: Io, e: unknown, json = false): number {
  if (isDragonflyError(e)) {
    if (json) io.out(JSON.stringify({ error: e.toJSON() }, null, 2) + '\n');
    else io.err(`error: ${e.code} ${e.message}\n  hint: ${e.hint}\n`);
    return 1;
  }
  io.err(`error: ${(e as Error)?.stack ?? String(e)}\n`);
  return 1;
}
