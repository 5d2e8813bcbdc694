// bench/plan: 10,000 machines (one file each), 50 templates, 200 assignments.
// Cold-process `validate` and `plan`, and in-process `planFleet`, next to a baseline measured in the
// same run: a cold node process that reads the same files. Targets: cold plan ≤ 2 s, planFleet ≤ 100 ms.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readFleetDir } from '../reconciler/sources/fleet-dir.js';
import { loadFleet } from '../reconciler/load.js';
import { readObserved } from '../reconciler/observed.js';
import { planFleet } from '../reconciler/plan.js';
import { LmdbStore } from '../store/lmdb.js';
import { writeFleet } from './fleet-generator.js';
import { median, round, timeProcess, timeSync } from './measure.js';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const BIN = path.join(ROOT, 'bin', 'dragonfly.js');

export async function benchPlan(opts: { machines?: number; runs?: number } = {}) {
  const shape = { machines: opts.machines ?? 10_000, templates: 50, assignments: 200 };
  const runs = opts.runs ?? 5;
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-bench-plan-'));
  const fleet = path.join(work, 'fleet');
  const state = path.join(work, 'state');
  try {
    process.stderr.write(`bench/plan: generating ${shape.machines} machines, ${shape.templates} templates, ${shape.assignments} assignments…\n`);
    writeFleet(fleet, shape);

    // Baseline: node start-up + reading every file, in a cold process.
    const readAll = `const fs=require('fs'),p=require('path');let n=0;(function w(d){for(const e of fs.readdirSync(d,{withFileTypes:true})){const f=p.join(d,e.name);if(e.isDirectory())w(f);else n+=fs.readFileSync(f,'utf8').length}})(${JSON.stringify(fleet)});`;
    const baseline = median(Array.from({ length: runs }, () => timeProcess(['-e', readAll])));

    const validate = median(Array.from({ length: runs }, () => timeProcess([BIN, 'validate', '--fleet', fleet])));
    const planEmpty = median(Array.from({ length: runs }, () => timeProcess([BIN, 'plan', '--fleet', fleet, '--state', state, '--detailed-exitcode'], [2])));
    timeProcess([BIN, 'apply', '--fleet', fleet, '--state', state, '--auto-approve']);
    const planApplied = median(Array.from({ length: runs }, () => timeProcess([BIN, 'plan', '--fleet', fleet, '--state', state, '--detailed-exitcode'], [0])));

    // In-process: the pure planner alone, against the applied store (10,000 records).
    const loaded = loadFleet(readFleetDir(fleet));
    if (!loaded.fleet) throw new Error('generated fleet is invalid');
    const store = LmdbStore.open(state);
    const observed = await readObserved(store);
    await store.close();
    planFleet(loaded.fleet, observed); // warm-up
    const planFleetMs = median(Array.from({ length: 20 }, () => timeSync(() => planFleet(loaded.fleet!, observed))));
    const loadMs = median(Array.from({ length: 3 }, () => timeSync(() => loadFleet(readFleetDir(fleet)))));

    const figures = {
      bench: 'plan',
      machines: shape.machines,
      baselineColdReadMs: round(baseline),
      coldValidateMs: round(validate),
      coldPlanEmptyStoreMs: round(planEmpty),
      coldPlanAppliedStoreMs: round(planApplied),
      inProcessLoadMs: round(loadMs),
      planFleetMs: round(planFleetMs, 2),
      validateVsBaseline: round(validate / baseline, 2),
      planVsBaseline: round(planApplied / baseline, 2),
      targets: { coldPlanMs: 2000, planFleetMs: 100 },
      met: { coldPlan: planApplied <= 2000 && planEmpty <= 2000, planFleet: planFleetMs <= 100 },
    };
    console.log(`baseline (cold node, read ${shape.machines + 250} files): ${figures.baselineColdReadMs} ms`);
    console.log(`cold validate:                 ${figures.coldValidateMs} ms  (${figures.validateVsBaseline}× baseline)`);
    console.log(`cold plan, empty store:        ${figures.coldPlanEmptyStoreMs} ms`);
    console.log(`cold plan, applied store:      ${figures.coldPlanAppliedStoreMs} ms  (${figures.planVsBaseline}× baseline; target ≤ 2000 ms)`);
    console.log(`in-process load (parse+validate+resolve): ${figures.inProcessLoadMs} ms`);
    console.log(`in-process planFleet:          ${figures.planFleetMs} ms  (target ≤ 100 ms)`);
    console.log(JSON.stringify(figures));
    return figures;
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await benchPlan({ machines: Number(process.env.BENCH_MACHINES ?? 10_000) });
