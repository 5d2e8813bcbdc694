// bench/boot: GET /boot/:mac for 10,000 machines in the store, under autocannon (50 connections), next to
// a fastify hello-world measured the same way in the same run. Targets (issue #12): ≥ 0.8× its req/s, p99 ≤ 10 ms.
// Each round also measures the same server while it holds 2,000 idle SSE clients (GET /api/v1/events),
// connected for that measurement only: req/s and p99 must stay within 20% of the figure without them.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import autocannon from 'autocannon';
import { memorableName } from '../schemas/memorable-name.js';
import type { MachineRecord } from '../schemas/types.js';
import { machineKey } from '../store/keys.js';
import { LmdbStore } from '../store/lmdb.js';
import { median, round } from './measure.js';

const here = path.dirname(fileURLToPath(import.meta.url));

function macOf(i: number): string {
  const hex = (0x100000 + i).toString(16).padStart(6, '0').slice(-6);
  return `52:54:00:${hex.slice(0, 2)}:${hex.slice(2, 4)}:${hex.slice(4, 6)}`;
}

async function startChild(args: string[]): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [path.join(here, 'boot-child.js'), ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout!.once('data', (d: Buffer) => resolve(Number(String(d).trim())));
    child.once('exit', (code) => reject(new Error(`server exited ${code}`)));
  });
  return { child, port };
}

/** `n` event-stream clients that stay connected and read (heartbeats), as idle consoles would. */
async function idleStreams(port: number, n: number): Promise<net.Socket[]> {
  const sockets: net.Socket[] = [];
  for (let i = 0; i < n; i++) {
    const socket = net.connect(port, '127.0.0.1');
    socket.on('error', () => {});
    await new Promise((r) => socket.once('connect', r));
    socket.write('GET /api/v1/events HTTP/1.1\r\nHost: bench\r\nAuthorization: Bearer bench-token\r\n\r\n');
    const head = await new Promise<string>((r) => socket.once('data', (d) => r(String(d))));
    if (!head.startsWith('HTTP/1.1 200')) throw new Error(`event stream ${i} refused: ${head.split('\r\n')[0]}`);
    sockets.push(socket);
  }
  return sockets;
}

async function load(port: number, machines: number, seconds: number) {
  let i = 0;
  const result = await autocannon({
    url: `http://127.0.0.1:${port}`,
    connections: 50,
    duration: seconds,
    requests: [{ method: 'GET', setupRequest: (req) => ({ ...req, path: `/boot/${macOf(i++ % machines).replaceAll(':', '-')}?arch=x86_64&platform=efi` }) }],
  });
  if (result.non2xx > 0 || result.errors > 0) throw new Error(`${result.non2xx} non-2xx responses, ${result.errors} errors`);
  return { rps: result.requests.average, p99: result.latency.p99, p50: result.latency.p50 };
}

export async function benchBoot(opts: { machines?: number; seconds?: number } = {}) {
  const machines = opts.machines ?? 10_000;
  const seconds = opts.seconds ?? 5;
  const state = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-bench-boot-'));
  const children: ChildProcess[] = [];
  try {
    // 10,000 machines, a mix of phases, as a fleet in the middle of a rollout would have.
    const store = LmdbStore.open(state);
    const put = Array.from({ length: machines }, (_, i) => {
      const mac = macOf(i);
      const phase = i % 3 === 0 ? 'Ready' : i % 3 === 1 ? 'Registered' : 'Discovered';
      const value: MachineRecord = { mac, memorableName: memorableName(mac)!, phase, source: 'git', name: `node-${i}`, ...(phase === 'Ready' ? { installed: { template: 'os', generation: 1 } } : {}) };
      return { key: machineKey(mac), value };
    });
    await store.commit({ put });
    await store.close();

    const hello = await startChild(['hello']);
    children.push(hello.child);
    const dragonfly = await startChild(['dragonfly', state]);
    children.push(dragonfly.child);
    await load(hello.port, machines, 2); // warm-up both
    await load(dragonfly.port, machines, 2);
    // Interleaved rounds, medians: the machine is shared, and load drifts within a run.
    const rounds = 3;
    const hellos: Awaited<ReturnType<typeof load>>[] = [];
    const boots: Awaited<ReturnType<typeof load>>[] = [];
    const withStreams: Awaited<ReturnType<typeof load>>[] = [];
    let open = Number.POSITIVE_INFINITY;
    for (let r = 0; r < rounds; r++) {
      hellos.push(await load(hello.port, machines, seconds));
      boots.push(await load(dragonfly.port, machines, seconds));
      const streams = await idleStreams(dragonfly.port, 2000);
      // Idle clients are the question, not their arrival: let the 2,000 connects' garbage settle first.
      await load(dragonfly.port, machines, 1);
      withStreams.push(await load(dragonfly.port, machines, seconds));
      open = Math.min(open, streams.filter((s) => !s.destroyed).length);
      for (const s of streams) s.destroy();
    }
    const mid = <T>(xs: T[], f: (x: T) => number) => median(xs.map(f));
    const base = { rps: mid(hellos, (x) => x.rps), p99: mid(hellos, (x) => x.p99) };
    const ours = { rps: mid(boots, (x) => x.rps), p99: mid(boots, (x) => x.p99), p50: mid(boots, (x) => x.p50) };
    const ratios = hellos.map((h, i) => round(boots[i]!.rps / h.rps, 2));
    const sse = { rps: mid(withStreams, (x) => x.rps), p99: mid(withStreams, (x) => x.p99) };

    const figures = {
      bench: 'boot',
      machines,
      connections: 50,
      helloRps: round(base.rps),
      helloP99Ms: base.p99,
      bootRps: round(ours.rps),
      bootP50Ms: ours.p50,
      bootP99Ms: ours.p99,
      ratio: round(ours.rps / base.rps, 2),
      ratioPerRound: ratios,
      sseClients: 2000,
      sseClientsStillOpen: open,
      withSseRps: round(sse.rps),
      withSseP99Ms: sse.p99,
      sseRpsRatio: round(sse.rps / ours.rps, 2),
      sseP99Ratio: round(sse.p99 / ours.p99, 2),
      targets: { ratio: 0.8, p99Ms: 10, sseWithin: 0.2 },
      met: { ratio: ours.rps / base.rps >= 0.8, p99: ours.p99 <= 10, sse: sse.rps >= 0.8 * ours.rps && sse.p99 <= 1.2 * ours.p99 },
    };
    console.log(`fastify hello-world:  ${figures.helloRps} req/s, p99 ${figures.helloP99Ms} ms`);
    console.log(`GET /boot/:mac:       ${figures.bootRps} req/s, p50 ${figures.bootP50Ms} ms, p99 ${figures.bootP99Ms} ms (${machines} machines in the store)`);
    console.log(`ratio:                ${figures.ratio}× hello-world (target ≥ 0.8×; p99 target ≤ 10 ms)`);
    console.log(`with 2,000 idle SSE clients: ${figures.withSseRps} req/s (${figures.sseRpsRatio}× without), p99 ${figures.withSseP99Ms} ms (${figures.sseP99Ratio}×); ${open} streams still open (target: within 20%)`);
    console.log(JSON.stringify(figures));
    return figures;
  } finally {
    for (const c of children) c.kill('SIGKILL');
    fs.rmSync(state, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await benchBoot({ seconds: Number(process.env.BENCH_SECONDS ?? 5) });
  process.exit(0);
}
