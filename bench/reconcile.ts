// bench/reconcile: a 10,000-machine fleet repository served over smart HTTP (git http-backend). One commit
// changing one machine file: push → (webhook: fetch now) → applied, as the controller of `dragonfly serve
// --repo` does it; and, in directory mode, file save → applied. Each next to a full reload of the same
// revision in the same run (fetch the tree, read every file, load, plan from scratch).
// Targets: push → applied ≤ 200 ms median; save → applied ≤ 150 ms median.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Controller } from '../reconciler/controller.js';
import { GitSource } from '../reconciler/sources/git-source.js';
import { loadFleet } from '../reconciler/load.js';
import { readObserved } from '../reconciler/observed.js';
import { planFleet } from '../reconciler/plan.js';
import { followDirectory, followGit } from '../reconciler/sources/follow.js';
import { LmdbStore } from '../store/lmdb.js';
import { createRepo, startGitHttp } from '../test/git-http.js';
import { writeFleet } from './fleet-generator.js';
import { median, round } from './measure.js';

const silent = { info() {}, warn() {}, error() {} };

async function waitFor(probe: () => boolean, what: string, ms = 120_000): Promise<void> {
  const end = Date.now() + ms;
  while (!probe()) {
    if (Date.now() > end) throw new Error(`bench/reconcile: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

export async function benchReconcile(opts: { machines?: number; rounds?: number } = {}) {
  const machines = opts.machines ?? 10_000;
  const rounds = opts.rounds ?? 9;
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-bench-reconcile-'));
  const server = await startGitHttp({ root: path.join(tmp, 'srv') });
  const store = LmdbStore.open(path.join(tmp, 'state'));
  let controller: Controller | undefined;
  try {
    process.stderr.write(`bench/reconcile: a repository of ${machines} machines…\n`);
    const repo = await createRepo(path.join(tmp, 'srv'), 'fleet.git', path.join(tmp, 'work'));
    const fleetDir = path.join(repo.work, 'fleet');
    writeFleet(fleetDir, { machines, templates: 50, assignments: 200 });
    await repo.commitAndPush('10,000 machines');
    const git = new GitSource({ url: server.url('fleet.git'), path: 'fleet', dir: path.join(tmp, 'cache') });
    controller = await Controller.start({ store, log: silent, source: 'bench' });
    const c = controller;
    const follower = followGit(git, { pollMs: 3_600_000, onRevision: (r) => c.offer(r), onError: (e) => process.stderr.write(`${e.message}\n`) });
    const head0 = await repo.head();
    let t0 = performance.now();
    await waitFor(() => c.current().applied?.revision === head0, 'the first apply', 600_000);
    const firstApplyMs = performance.now() - t0;

    // One machine file per commit, alternating its rack label.
    const edit = (i: number) => {
      const file = path.join(fleetDir, 'machines', `node-${String(i).padStart(5, '0')}.yaml`);
      const text = fs.readFileSync(file, 'utf8');
      fs.writeFileSync(file, text.includes('rack: moved') ? text.replace(/rack: moved-\d+/, `rack: r${Math.floor(i / 40)}`) : text.replace(/rack: r\d+/, `rack: moved-${i}`));
      return path.relative(repo.work, file);
    };
    const push: number[] = [];
    const fullReload: number[] = [];
    for (let i = 0; i < rounds; i++) {
      edit(i * 7 + 1);
      const sha = await repo.commitAndPush(`move node ${i}`);
      t0 = performance.now();
      follower.fetchNow(); // what POST /api/v1/webhooks/… does
      await waitFor(() => c.current().applied?.revision === sha, 'the pushed commit applied');
      push.push(performance.now() - t0);
      // The same revision, reloaded from scratch: every file out of git, loaded, planned in full.
      t0 = performance.now();
      const fresh = new GitSource({ url: server.url('fleet.git'), path: 'fleet', dir: path.join(tmp, 'cache') });
      const loaded = loadFleet(await fresh.files(sha), { revision: sha });
      planFleet(loaded.fleet!, await readObserved(store));
      fullReload.push(performance.now() - t0);
    }
    await follower.close();

    // Directory mode on the working tree: each save is one revision (content hash).
    const dirFollower = await followDirectory(fleetDir, { onRevision: (r) => c.offer(r), onError: (e) => process.stderr.write(`${e.message}\n`) });
    await c.idle();
    const save: number[] = [];
    for (let i = 0; i < rounds; i++) {
      const before = c.current().applied?.revision;
      edit(i * 7 + 3);
      t0 = performance.now();
      await waitFor(() => c.current().applied?.revision !== before, 'the saved file applied');
      save.push(performance.now() - t0);
    }
    await dirFollower.close();

    const m = { push: median(push), save: median(save), full: median(fullReload) };
    const figures = {
      bench: 'reconcile',
      machines,
      rounds,
      firstApplyMs: round(firstApplyMs),
      pushToAppliedMs: round(m.push),
      saveToAppliedMs: round(m.save),
      fullReloadMs: round(m.full),
      pushVsFullReload: round(m.full / m.push, 2),
      targets: { pushToAppliedMs: 200, saveToAppliedMs: 150 },
      met: { push: m.push <= 200, save: m.save <= 150 },
    };
    console.log(`first apply of ${machines} machines: ${figures.firstApplyMs} ms`);
    console.log(`push → applied:  ${figures.pushToAppliedMs} ms median (target ≤ 200 ms); full reload ${figures.fullReloadMs} ms (${figures.pushVsFullReload}× slower)`);
    console.log(`save → applied:  ${figures.saveToAppliedMs} ms median (target ≤ 150 ms; includes the watcher's 50 ms quiet time)`);
    console.log(JSON.stringify(figures));
    return figures;
  } finally {
    await controller?.close();
    await store.close();
    await server.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await benchReconcile({ machines: Number(process.env.BENCH_RECONCILE_MACHINES ?? 10_000) });
  process.exit(0);
}
