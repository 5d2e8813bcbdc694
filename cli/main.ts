// Entry point of the `dragonfly` binary (bin/dragonfly.js imports the compiled file).
import { run } from './run.js';
import { processIo } from './output.js';

const argv = process.argv.slice(2);
const code = await run(argv, processIo(argv.includes('--no-color')));
// lmdb keeps native handles alive; every command has closed its store by now, so exit explicitly.
process.exitCode = code;
setImmediate(() => process.exit(code));
