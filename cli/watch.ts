// `dragonfly watch`: follow a running server's event stream (GET /api/v1/events, server-sent events).
import { DragonflyError } from '../schemas/errors.js';
import type { Io } from './output.js';
import { tokenFrom } from './token-file.js';

export const watchHelp = `Usage: dragonfly watch [--server URL] [--since REV] [--json] [--token-file FILE]

Print machine and workflow changes as a running \`dragonfly serve\` records them: discoveries, hardware
reports, workflows starting, per-action progress and log lines, successes and failures. Reconnects and
resumes from the last revision it printed.

  --server URL   the server (default http://127.0.0.1:8080)
  --since REV    replay from this store revision (default: from now)
  --json         one JSON object per change
  --token-file FILE   a read (or admin) token of the server (else DRAGONFLY_READ_TOKEN, then
                 DRAGONFLY_API_TOKEN): the event stream shows inventories, so it is not open

When the server no longer keeps the changes after the revision it would resume from (a long
disconnection), it says so and goes on from the present.
`;

interface StreamEvent {
  key: string;
  type: 'put' | 'delete';
  revision: number;
  value: Record<string, unknown> | null;
}

/** One human line for a change, or undefined for changes the event log already describes. */
export function describeChange(kind: string, e: StreamEvent): string | undefined {
  const v = e.value ?? {};
  if (kind === 'event') {
    const pct = typeof v.percent === 'number' ? ` ${Math.round(v.percent)}%` : '';
    const rate = typeof v.rate === 'number' ? ` ${(v.rate / 1e6).toFixed(1)} MB/s` : '';
    const head = `${v.at} ${String(v.machine ?? v.mac ?? '')} ${v.type}${pct}${rate}: ${v.message}`;
    const log = Array.isArray(v.log) ? v.log.map((l) => `\n    | ${l}`).join('') : '';
    return head + log;
  }
  if (kind === 'machine' && e.type === 'put') return `${new Date().toISOString()} ${String(v.name ?? v.memorableName)} is ${v.phase}`;
  return undefined;
}

export async function watchCommand(opts: { server?: string; since?: string; json?: boolean; tokenFile?: string }, io: Io): Promise<number> {
  const base = (opts.server ?? 'http://127.0.0.1:8080').replace(/\/+$/, '');
  let since = opts.since;
  if (since !== undefined && !/^\d+$/.test(since)) throw new DragonflyError('DF_ERR_USAGE', '--since takes a store revision (a number)');
  const token = tokenFrom(opts.tokenFile, process.env.DRAGONFLY_READ_TOKEN, process.env.DRAGONFLY_API_TOKEN);
  for (;;) {
    try {
      const res = await fetch(`${base}/api/v1/events${since !== undefined ? `?since=${since}` : ''}`, {
        headers: { accept: 'text/event-stream', ...(token ? { authorization: `Bearer ${token}` } : {}) },
      });
      if (res.status === 401 || res.status === 403) {
        throw new DragonflyError('DF_ERR_UNAUTHORIZED', `${base} refused the event stream (HTTP ${res.status}): pass --token-file or set DRAGONFLY_READ_TOKEN`);
      }
      if (res.status === 410) {
        io.err(`watch: the server no longer keeps the changes after revision ${since}; going on from now (some changes were not shown)\n`);
        since = undefined;
        continue;
      }
      if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
      const decoder = new TextDecoder();
      let buffer = '';
      for await (const chunk of res.body) {
        buffer += decoder.decode(chunk as Uint8Array, { stream: true });
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          const frame = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const fields = Object.fromEntries(frame.split('\n').filter((l) => !l.startsWith(':')).map((l) => [l.slice(0, l.indexOf(':')), l.slice(l.indexOf(':') + 2)]));
          if (!fields.data) continue;
          const e = JSON.parse(fields.data) as StreamEvent;
          since = String(e.revision);
          if (opts.json) io.out(JSON.stringify({ kind: fields.event, ...e }) + '\n');
          else {
            const line = describeChange(fields.event ?? '', e);
            if (line) io.out(line + '\n');
          }
        }
      }
    } catch (e) {
      if (e instanceof DragonflyError) throw e;
      io.err(`watch: ${base} unreachable (${(e as Error).message}); retrying in 2 s\n`);
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}
