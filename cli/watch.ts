// `dragonfly watch`: follow a running server's event stream (GET /api/v1/events, server-sent events).
import { DragonflyError } from '../schemas/errors.js';
import type { Io } from './output.js';

export const watchHelp = `Usage: dragonfly watch [--server URL] [--since REV] [--json]

Print machine and workflow changes as a running \`dragonfly serve\` records them: discoveries, hardware
reports, workflows starting, per-action progress and log lines, successes and failures. Reconnects and
resumes from the last revision it printed.

  --server URL   the server (default http://127.0.0.1:8080)
  --since REV    replay from this store revision (default: from now)
  --json         one JSON object per change
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

export async function watchCommand(opts: { server?: string; since?: string; json?: boolean }, io: Io): Promise<number> {
  const base = (opts.server ?? 'http://127.0.0.1:8080').replace(/\/+$/, '');
  let since = opts.since;
  if (since !== undefined && !/^\d+$/.test(since)) throw new DragonflyError('DF_ERR_USAGE', '--since takes a store revision (a number)');
  for (;;) {
    try {
      const res = await fetch(`${base}/api/v1/events${since !== undefined ? `?since=${since}` : ''}`, { headers: { accept: 'text/event-stream' } });
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
      io.err(`watch: ${base} unreachable (${(e as Error).message}); retrying in 2 s\n`);
    }
    await new Promise((r) => setTimeout(r, 2000));
  }
}
