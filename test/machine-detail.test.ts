// `dragonfly machines NAME`: one machine in full, through the real binary, over a store written by the
// boot server's own functions (discovery, a hardware report, an apply, a claim, progress).
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { recordHardware, recordSeen } from '../boot/observe.js';
import { claimWorkflow, reportAction } from '../boot/workflow-progress.js';
import { applyPlan } from '../reconciler/apply.js';
import { loadFleet } from '../reconciler/load.js';
import { readObserved } from '../reconciler/observed.js';
import { planFleet } from '../reconciler/plan.js';
import { oneMachineFleetYaml } from '../reconciler/test-builders.js';
import type { HardwareReport } from '../schemas/types.js';
import { LmdbStore } from '../store/lmdb.js';
import { dragonfly, tempDir } from './cli-helpers.js';

const MAC = '52:54:00:ab:cd:01';
const HW: HardwareReport = {
  cpu: { model: 'EPYC 7302', cores: 16, threads: 32 },
  memoryBytes: 64 * 2 ** 30,
  disks: [{ name: 'nvme0n1', path: '/dev/nvme0n1', sizeBytes: 960e9, serial: 'S4EW0001', wwn: 'eui.0025385', rotational: false, table: 'none' }],
  nics: [{ name: 'eno1', mac: MAC, link: true, speedMbps: 25000 }],
};
let dir: string;
let state: string;
let wf: string;

beforeAll(async () => {
  dir = tempDir('dragonfly-detail-');
  state = path.join(dir, 'state');
  const store = LmdbStore.open(state);
  await recordSeen(store, MAC, { source: 'pxe', ip: '10.0.0.21' });
  await recordHardware(store, MAC, HW, '10.0.0.21');
  await recordHardware(store, MAC, { ...HW, disks: [] }, '10.0.0.66'); // a second, unauthenticated report
  const { fleet } = loadFleet([{ path: 'f.yaml', text: oneMachineFleetYaml('db-01', MAC, 'role: db, rack: r7') }]);
  const { workflows } = await applyPlan(store, planFleet(fleet!, await readObserved(store)), fleet!, { user: 'test', source: 'cli' });
  wf = workflows[0]!;
  await claimWorkflow(store, wf, { secretSha256: 'ab'.repeat(32), ip: '10.0.0.21' });
  await reportAction(store, wf, 0, { state: 'running', percent: 40, message: '384 MiB of 960 MiB' });
  await store.close();
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('dragonfly machines NAME', () => {
  it('shows one machine in full: fate, workflow progress and claim, hardware, the unverified report, events', () => {
    const r = dragonfly(['machines', 'db-01', '--state', state]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    const out = r.stdout;
    expect(out).toContain(`db-01 (CensusAbleQualityParent)  ${MAC}`);
    expect(out).toContain('  phase:      Provisioning');
    expect(out).toContain('  labels:     rack=r7, role=db');
    expect(out).toMatch(/ {2}boot fate: {2}imaging \(workflow wf-db-01-g1-\w+ is running\)/);
    expect(out).toContain('  desired:    tiny@1');
    expect(out).toMatch(new RegExp(`workflow: {3}${wf} tiny@1 running on /dev/nvme0n1, claimed from 10\\.0\\.0\\.21`));
    expect(out).toContain('    1. image2disk [########............]  40% running  384 MiB of 960 MiB');
    expect(out).toContain('  hardware (first report, not yet verified by a claimed workflow):');
    expect(out).toContain('    /dev/nvme0n1  960.0 GB, solid-state, serial S4EW0001, wwn eui.0025385, no partition table');
    expect(out).toContain('    eno1  52:54:00:ab:cd:01, link up, 25000 Mb/s');
    expect(out).toMatch(/unverified hardware report from 10\.0\.0\.66 at \S+ \(drift; never used for planning\):/);
    expect(out).toMatch(/recent events:\n(.*\n)*.*machine\.discovered: seen by pxe from 10\.0\.0\.21/);
    expect(out).toMatch(/workflow\.claimed: claimed by the Mage at 10\.0\.0\.21/);
  });

  it('finds the machine by MAC in any notation and by memorable name; --json is the same data', () => {
    const byMac = dragonfly(['machines', '52-54-00-AB-CD-01', '--state', state, '--json']);
    const byWords = dragonfly(['machines', 'censusablequalityparent', '--state', state, '--json']);
    expect(byMac.status).toBe(0);
    const detail = JSON.parse(byMac.stdout);
    expect(JSON.parse(byWords.stdout)).toEqual(detail);
    expect(detail).toMatchObject({ name: 'db-01', mac: MAC, phase: 'Provisioning', bootFate: { kind: 'imaging' }, workflow: { id: wf, state: 'running', claimedFrom: '10.0.0.21' }, hardware: { verified: false } });
    expect(JSON.stringify(detail)).not.toContain('secretSha256');
  });

  it('an unknown machine is an error with a code and exit 1', () => {
    const r = dragonfly(['machines', 'nope-01', '--state', state]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('error: DF_ERR_NOT_FOUND no machine named "nope-01" in the store');
    expect(r.stderr).toContain('hint: list the machines with `dragonfly machines`');
  });
});
