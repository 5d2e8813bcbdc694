// The CLI's own log lines (timings, what was written) go to stderr through pino, quiet by default:
// DRAGONFLY_LOG_LEVEL=info (or debug) shows them. Command results go to stdout, not here.
import { pino } from 'pino';

export const log = pino({ name: 'dragonfly', level: process.env.DRAGONFLY_LOG_LEVEL ?? 'warn' }, pino.destination(2));
