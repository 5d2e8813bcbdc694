// Entry point of the `dragonfly` binary (bin/dragonfly.js imports the compiled file).
import { run } from './run.js';
import { processIo } from './output.js';

// A reader that went away (`dragonfly plan | head -1`) is not an error: stop quietly, no stack trace.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(typeof process.exitCode === 'number' ? process.exitCode : 0);
    throw e;
  });
}

/** Resolves once everything written to `stream` so far has been handed to the OS (or the reader left). */
function drained(stream: NodeJS.WriteStream): Promise<void> {
  return new Promise((resolve) => {
    if (stream.destroyed) return resolve();
    stream.write('', () => resolve());
  });
}

const argv = process.argv.slice(2);
const code = await run(argv, processIo(argv.includes('--no-color')));
process.exitCode = code;
// A pipe takes output asynchronously: exiting before it drains would cut `plan --json | jq` at 64 KiB.
await Promise.all([drained(process.stdout), drained(process.stderr)]);
// lmdb keeps native handles alive; every command has closed its store by now, so exit explicitly.
process.exit(code);
