// Warnings caused by load (server busy, a host at its transfer limit) arrive once per datagram, as fast as
// anyone cares to send them: the first is logged at once, then at most one line per interval, carrying how
// many were suppressed since the last line. The stats count every refusal; the log only has to tell.
import type { TftpLog } from './transfer.js';

/** Default interval between two lines of one throttled warning. */
export const THROTTLE_INTERVAL_MS = 10_000;

/** A `warn` for `msg` that logs at most once per `intervalMs`; `now` is injectable for tests. */
export function throttledWarning(
  log: TftpLog | undefined,
  msg: string,
  intervalMs = THROTTLE_INTERVAL_MS,
  now: () => number = () => performance.now(),
): (obj: object) => void {
  let last = -Infinity;
  let suppressed = 0;
  return (obj) => {
    const t = now();
    if (t - last < intervalMs) {
      suppressed++;
      return;
    }
    log?.warn(suppressed > 0 ? { ...obj, suppressed } : obj, msg);
    last = t;
    suppressed = 0;
  };
}
