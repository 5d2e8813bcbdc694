// bench/store-growth: a server that runs for a year holds a bounded store. 100,000 commits shaped like
// what a busy server writes — workflow progress with an event, a machine update, an apply with its audit
// entry — with the event log trimmed as `dragonfly serve` trims it (every "minute" here: every 1,000
// commits). The store's size halfway (50,000 commits, when every log has long reached its bound) is the
// baseline: after 100,000 it must not have grown with the count (target: ≤ 1.2× the baseline), and the
// change log and the event log stay at their bounds. Only the audit log (one entry per apply) grows.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { trimEvents } from '../boot/event-retention.js';
import { AUDIT, EVENTS, logKeys, machineKey, workflowKey } from '../store/keys.js';
import { LmdbStore } from '../store/lmdb.js';
import { round } from './measure.js';

const MAX_EVENTS = 20_000;
const MACHINES = 500;

function mac(i: number): string {
  const hex = (0x100000 + i).toString(16).slice(-6);
  return `52:54:00:${hex.slice(0, 2)}:${hex.slice(2, 4)}:${hex.slice(4, 6)}`;
}

/** The same 100,000 commits, bounded as `dragonfly serve` bounds them, or not at all (the baseline). */
async function grow(total: number, bounded: boolean) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-bench-store-'));
  const store = LmdbStore.open(dir, bounded ? {} : { retainRevisions: Number.MAX_SAFE_INTEGER });
  const sizes: { commits: number; bytes: number; events: number; oldest: number }[] = [];
  const started = Date.now();
  try {
    for (let i = 1; i <= total; i++) {
      const at = new Date(1_700_000_000_000 + i * 1000);
      const m = mac(i % MACHINES);
      const kind = i % 10;
      const put: { key: string; value: unknown }[] = [];
      if (kind < 7) {
        // Progress of an action: the workflow record and, for state changes, an event with a log line.
        put.push({ key: workflowKey(`wf-node-${i % MACHINES}`), value: { id: `wf-node-${i % MACHINES}`, state: 'running', percent: i % 100, actions: [{ action: 'image2disk', state: 'running' }] } });
        put.push({ key: logKeys(EVENTS, at, 1)[0]!, value: { at: at.toISOString(), type: 'workflow.action', mac: m, message: `image2disk ${i % 100}%`, log: [`wrote ${i} MiB`] } });
      } else if (kind < 9) {
        put.push({ key: machineKey(m), value: { mac: m, phase: 'Provisioning', seen: at.toISOString(), hardware: { disks: [{ name: 'nvme0n1', sizeBytes: 960e9 }], nics: [{ mac: m }] } } });
        put.push({ key: logKeys(EVENTS, at, 1)[0]!, value: { at: at.toISOString(), type: 'machine.hardware', mac: m, message: '1 disks, 1 NICs' } });
      } else if (i % 1000 === 999) {
        // An apply: the audit log is kept whole (it is what operators answer for), one entry per apply.
        put.push({ key: logKeys(AUDIT, at, 1)[0]!, value: { at: at.toISOString(), user: 'ci', revision: `rev-${i}`, planHash: 'a'.repeat(64) } });
      } else {
        put.push({ key: machineKey(m), value: { mac: m, phase: 'Ready', seen: at.toISOString() } });
      }
      await store.commit({ put });
      if (bounded && i % 1000 === 0) await trimEvents(store, MAX_EVENTS);
      if (i === total / 2 || i === total) {
        const stat = fs.statSync(path.join(dir, 'state.lmdb'));
        sizes.push({ commits: i, bytes: stat.size, events: await store.read((s) => s.count(EVENTS)), oldest: await store.oldestRevision() });
      }
    }
    return { sizes, seconds: (Date.now() - started) / 1000, audit: await store.read((s) => s.count(AUDIT)) };
  } finally {
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export async function benchStoreGrowth(opts: { commits?: number } = {}) {
  const total = opts.commits ?? 100_000;
  const bounded = await grow(total, true);
  const unbounded = await grow(total, false);
  const [base, end] = [bounded.sizes[0]!, bounded.sizes[1]!];
  const forever = unbounded.sizes[1]!;
  const figures = {
    bench: 'store-growth',
    commits: total,
    seconds: round(bounded.seconds),
    halfwayMiB: round(base.bytes / 2 ** 20, 2),
    finalMiB: round(end.bytes / 2 ** 20, 2),
    ratio: round(end.bytes / base.bytes, 2),
    unboundedMiB: round(forever.bytes / 2 ** 20, 2),
    unboundedEvents: forever.events,
    vsUnbounded: round(end.bytes / forever.bytes, 2),
    eventsKept: end.events,
    changeLogFrom: end.oldest,
    auditEntries: bounded.audit,
    targets: { ratio: 1.2, events: MAX_EVENTS },
    met: { ratio: end.bytes / base.bytes <= 1.2, events: end.events <= MAX_EVENTS },
  };
  console.log(`bounded store: ${figures.halfwayMiB} MiB after ${total / 2} commits, ${figures.finalMiB} MiB after ${total} (${figures.ratio}×, target ≤ 1.2×)`);
  console.log(`the same commits with nothing compacted or trimmed: ${figures.unboundedMiB} MiB, ${figures.unboundedEvents} events (bounded is ${figures.vsUnbounded}× of it)`);
  console.log(`events kept: ${figures.eventsKept} (bound ${MAX_EVENTS}); change log from revision ${figures.changeLogFrom}; audit entries ${figures.auditEntries} (kept whole)`);
  console.log(JSON.stringify(figures));
  return figures;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await benchStoreGrowth({ commits: Number(process.env.BENCH_COMMITS ?? 100_000) });
  process.exit(0);
}
