// Logs go through pino. On a terminal they are readable lines (pino-pretty, in-process); piped, or with
// --log-format json, they are JSON lines for machines. The CLI's own log lines (timings, what was written)
// go to stderr, quiet by default: DRAGONFLY_LOG_LEVEL=info (or debug) shows them.
import { pino, type Logger } from 'pino';
import { createRequire } from 'node:module';
import { DragonflyError } from '../schemas/errors.js';

// pino-pretty is loaded only when a terminal will read the lines: most commands start piped, and cold.
const require = createRequire(import.meta.url);

export type LogFormat = 'auto' | 'json' | 'pretty';

export function logFormat(text: string | undefined): LogFormat {
  if (text === undefined) return 'auto';
  if (text === 'auto' || text === 'json' || text === 'pretty') return text;
  throw new DragonflyError('DF_ERR_SERVE_CONFIG', `--log-format takes json, pretty or auto, not ${JSON.stringify(text)}`);
}

/** A logger writing to file descriptor `fd` (1 or 2) in `format`; auto means pretty exactly when fd is a terminal. */
export function createLogger(opts: { level: string; fd: 1 | 2; format?: LogFormat; name?: string }): Logger {
  const stream = opts.fd === 1 ? process.stdout : process.stderr;
  const pretty = opts.format === 'pretty' || ((opts.format ?? 'auto') === 'auto' && stream.isTTY === true);
  const base = { name: opts.name ?? 'dragonfly', level: opts.level };
  if (!pretty) return pino(base, pino.destination(opts.fd));
  const { PinoPretty } = require('pino-pretty') as typeof import('pino-pretty');
  return pino(
    base,
    PinoPretty({
      destination: opts.fd,
      sync: true,
      colorize: stream.isTTY === true && !process.env.NO_COLOR,
      translateTime: 'SYS:HH:MM:ss.l',
      ignore: 'pid,hostname,name',
      singleLine: true,
    }),
  );
}

export const log = createLogger({ level: process.env.DRAGONFLY_LOG_LEVEL ?? 'warn', fd: 2 });
