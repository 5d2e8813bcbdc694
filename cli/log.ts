// Logs go through pino. On a terminal they are readable lines (pino-pretty, in-process); piped, or with
// --log-format json, they are JSON lines for machines. The CLI's own log lines (timings, what was written)
// go to stderr, quiet by default: DRAGONFLY_LOG_LEVEL=info (or debug) shows them.
import { pino, type Logger } from 'pino';
import { PinoPretty } from 'pino-pretty';
import { DragonflyError } from '../schemas/errors.js';

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
