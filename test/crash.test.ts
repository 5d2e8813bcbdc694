// Acceptance: `kill -9` of `dragonfly apply` at random moments never leaves the store between two
// revisions. A generated ~300-machine fleet in two variants (A and B differ in every machine) is applied
// alternately by the real binary, which is SIGKILLed after a random delay spread over a whole run; after
// each run the store must hold all of the old state or all of the new one, with one audit entry per apply
// that landed.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { contentRevision } from '../reconciler/load.js';
import { readFleetDir } from '../reconciler/sources/fleet-dir.js';
import { LmdbStore } from '../store/lmdb.js';
import { APPLIED, AUDIT, EVENTS, MACHINES, WORKFLOWS } from '../store/keys.js';
import type { AppliedRevision, AuditEntry } from '../reconciler/apply.js';
import type { MachineRecord } from '../schemas/types.js';
import { BIN, ROOT, tempDir } from './cli-helpers.js';

const MACHINE_COUNT = 300;
const RUNS = 40;
/** Every this many runs, one is not killed and measures how long a run takes now. */
const RECALIBRATE = 8;

type Variant = 'a' | 'b';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

const TEMPLATE = `apiVersion: dragonfly.computer/v1
kind: Template
metadata:
  name: ubuntu-24.04
spec:
  image:
    url: http://images.lan/ubuntu/noble/ubuntu-24.04-server-amd64-rootfs.ext4.zst
    sha256: 390ce9cac944f81ab811219500f81e90a7194d31551e86e18a768337080c044e
    compression: zstd
    size: 4GiB
  timeout: 20m
  actions:
    - partition:
        disk: \${disk}
        table: gpt
        partitions:
          - {name: efi, size: 512MiB, type: efi, format: vfat, label: EFI}
          - {name: root, size: rest, type: linux}
    - image2disk: {partition: 2}
    - writefile: {partition: 2, path: /etc/hostname, content: "\${machine.name}\\n", mode: "0644"}
    - kexec: {partition: 2, kernel: /boot/vmlinuz, initrd: /boot/initrd.img, cmdline: "root=LABEL=root ro"}
`;

const ASSIGNMENT = `apiVersion: dragonfly.computer/v1
kind: Assignment
metadata:
  name: role-a
spec:
  template: ubuntu-24.04
  selector: {role: a}
  generation: 1
  rollout: {maxParallel: 10, maxFailures: 1}
`;

function machineYaml(i: number, wave: Variant): string {
  const n = String(i).padStart(4, '0');
  const mac = `52:54:00:10:${((i >> 8) & 0xff).toString(16).padStart(2, '0')}:${(i & 0xff).toString(16).padStart(2, '0')}`;
  return `apiVersion: dragonfly.computer/v1
kind: Machine
metadata:
  name: m-${n}
  labels:
    rack: r${Math.floor(i / 40)}
    role: ${i % 2 === 0 ? 'a' : 'b'}
    wave: ${wave}
spec:
  mac: ${mac}
  bmc: {driver: ipmi, address: 10.1.${Math.floor(i / 250)}.${i % 250}, credentialsRef: bmc-rack}
`;
}

/** A fleet repo laid out like a real one: one file per machine, one template, one assignment. */
function writeFleet(dir: string, wave: Variant): string {
  fs.mkdirSync(path.join(dir, 'machines'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'templates'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'assignments'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'templates', 'ubuntu-24.04.yaml'), TEMPLATE);
  fs.writeFileSync(path.join(dir, 'assignments', 'role-a.yaml'), ASSIGNMENT);
  for (let i = 1; i <= MACHINE_COUNT; i++) {
    fs.writeFileSync(path.join(dir, 'machines', `m-${String(i).padStart(4, '0')}.yaml`), machineYaml(i, wave));
  }
  return dir;
}

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  ms: number;
  stdout: string;
  stderr: string;
}

/** Spawn `dragonfly apply`; SIGKILL it after `killAfterMs` (never, when undefined). */
function apply(fleet: string, state: string, killAfterMs?: number): Promise<Run> {
  const started = process.hrtime.bigint();
  const child = spawn(process.execPath, [BIN, 'apply', '--fleet', fleet, '--state', state, '--auto-approve'], {
    cwd: ROOT,
    env: { ...process.env, NO_COLOR: '1', DRAGONFLY_STATE: '', DRAGONFLY_USER: 'crash-test' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
  const killer = killAfterMs === undefined ? undefined : setTimeout(() => child.kill('SIGKILL'), killAfterMs);
  // A run that never ends (e.g. a writer lock left behind by a killed run) fails the test instead of hanging it.
  const guard = setTimeout(() => child.kill('SIGKILL'), 30_000);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => {
      clearTimeout(guard);
      if (killer) clearTimeout(killer);
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      if (killAfterMs === undefined && signal) reject(new Error(`dragonfly apply did not finish within 30 s (signal ${signal}); stderr: ${stderr}`));
      else resolve({ code, signal, ms, stdout, stderr });
    });
  });
}

interface StoreState {
  revision: number;
  applied?: string;
  waves: Set<string>;
  machines: number;
  audit: AuditEntry[];
  events: number;
  workflows: number;
}

async function inspect(state: string): Promise<StoreState> {
  const store = LmdbStore.open(state);
  try {
    return await store.read((s) => {
      const machines = s.list<MachineRecord>(MACHINES);
      return {
        revision: s.revision,
        applied: s.get<AppliedRevision>(APPLIED)?.value.revision,
        waves: new Set(machines.map((m) => m.value.labels?.wave ?? '(none)')),
        machines: machines.length,
        audit: s.list<AuditEntry>(AUDIT).map((a) => a.value),
        events: s.list(EVENTS).length,
        workflows: s.list(WORKFLOWS).length,
      };
    });
  } finally {
    await store.close();
  }
}

describe('kill -9 during apply', () => {
  it(
    `leaves the store at the old revision or the new one, never between (${RUNS} runs, ${MACHINE_COUNT} machines)`,
    async () => {
      const testStarted = Date.now();
      const fleets = { a: writeFleet(tempDir('dragonfly-crash-fleet-'), 'a'), b: writeFleet(tempDir('dragonfly-crash-fleet-'), 'b') };
      const state = tempDir('dragonfly-crash-state-');
      dirs.push(fleets.a, fleets.b, state);
      const revisionOf = { a: contentRevision(readFleetDir(fleets.a)), b: contentRevision(readFleetDir(fleets.b)) };
      expect(revisionOf.a).not.toBe(revisionOf.b);
      const variantOf = (rev: string | undefined): Variant | undefined => (rev === revisionOf.a ? 'a' : rev === revisionOf.b ? 'b' : undefined);

      /** Everything the store must satisfy after any run, killed or not; returns which variant it holds. */
      const check = (s: StoreState, label: string): Variant | undefined => {
        if (s.applied === undefined) {
          expect(s.machines, `${label}: machines without fleet/applied`).toBe(0);
          expect(s.audit, `${label}: audit entries without fleet/applied`).toHaveLength(0);
          expect(s.revision, label).toBe(0);
          return undefined;
        }
        const v = variantOf(s.applied);
        expect(v, `${label}: fleet/applied is ${s.applied}, neither A (${revisionOf.a}) nor B (${revisionOf.b})`).toBeDefined();
        expect(s.machines, `${label}: machine records`).toBe(MACHINE_COUNT);
        expect([...s.waves], `${label}: machines' wave labels must all be "${v}" (fleet/applied names variant ${v})`).toEqual([v]);
        for (const a of s.audit) expect([revisionOf.a, revisionOf.b], `${label}: audit fleetRevision`).toContain(a.fleetRevision);
        expect(s.audit.at(-1)!.fleetRevision, `${label}: the last audit entry names the applied revision`).toBe(s.applied);
        expect(s.workflows, `${label}: workflows (no machine was ever discovered)`).toBe(0);
        return v;
      };

      // One uninterrupted run (empty store → A) to learn how long a run takes.
      const first = await apply(fleets.a, state);
      expect(first.stderr).toBe('');
      expect(first.code).toBe(0);
      expect(first.stdout).toContain('Apply complete!');
      let s = await inspect(state);
      expect(check(s, 'after the first run')).toBe('a');
      expect(s.revision).toBe(1);
      expect(s.audit).toHaveLength(1);
      expect(s.events).toBe(MACHINE_COUNT);

      // And one uninterrupted A → B run, the kind of run the loop kills (every machine is updated).
      const second = await apply(fleets.b, state);
      expect(second.code, second.stderr).toBe(0);
      expect(second.stdout).toMatch(new RegExp(`0 to add, ${MACHINE_COUNT} to change`));
      s = await inspect(state);
      expect(check(s, 'after the second run')).toBe('b');
      expect(s.revision).toBe(2);
      // Kill delays spread over a whole run. The machine is shared: a run can take twice as long a minute
      // later, so every RECALIBRATE-th run goes uninterrupted and sets the spread from its own duration.
      let maxDelay = Math.max(first.ms, second.ms) * 1.2;
      const spreads = [maxDelay];

      let applies = 2; // commits that landed, as seen from outside
      let current: Variant = 'b';
      let revision = 2;
      const tally = { completed: 0, killedBeforeCommit: 0, killedAfterCommit: 0 };
      const delays: number[] = [];
      const durations: number[] = [];

      for (let i = 0; i < RUNS; i++) {
        // Alternate: always ask for the variant the store does not hold, so every run changes every machine.
        const target: Variant = current === 'a' ? 'b' : 'a';
        const calibrate = (i + 1) % RECALIBRATE === 0;
        const delay = calibrate ? undefined : Math.random() * maxDelay;
        const r = await apply(fleets[target], state, delay);
        durations.push(r.ms);
        if (calibrate && r.code === 0) spreads.push((maxDelay = r.ms * 1.2));
        const label = `run ${i + 1} (${current} → ${target}, ${delay === undefined ? 'not killed' : `kill after ${delay.toFixed(0)} ms`}, ${r.signal ? `killed by ${r.signal}` : `exit ${r.code}`})`;
        const killed = r.signal === 'SIGKILL';
        if (!killed) {
          expect(r.signal, label).toBeNull();
          expect(r.code, `${label}: ${r.stderr}`).toBe(0);
        }
        s = await inspect(state);
        const now = check(s, label);
        // Old revision or the next one: one transaction per apply, nothing in between.
        expect([revision, revision + 1], `${label}: store revision`).toContain(s.revision);
        const landed = s.revision === revision + 1;
        if (landed) {
          applies++;
          expect(now, `${label}: a commit landed, so the store must hold the target`).toBe(target);
        } else {
          expect(now, `${label}: no commit landed, so the store must still hold the old variant`).toBe(current);
        }
        if (!killed) {
          expect(now, `${label}: a completed apply leaves the target`).toBe(target);
          tally.completed++;
        } else if (landed) tally.killedAfterCommit++;
        else tally.killedBeforeCommit++;
        expect(s.audit, `${label}: one audit entry per apply that landed`).toHaveLength(applies);
        expect(s.events, `${label}: one event per machine per apply that landed`).toBe(applies * MACHINE_COUNT);
        current = now!;
        revision = s.revision;
        if (killed) delays.push(delay!);
      }

      const avg = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0);
      console.log(
        `crash test: one uninterrupted run ${first.ms.toFixed(0)} ms (register ${MACHINE_COUNT}) / ${second.ms.toFixed(0)} ms (update ${MACHINE_COUNT}); ` +
          `kill delay uniform in 0..${spreads.map((d) => d.toFixed(0)).join('/')} ms (recalibrated); ${RUNS} runs: ${tally.killedBeforeCommit} killed before commit, ` +
          `${tally.killedAfterCommit} killed after commit, ${tally.completed} completed; ` +
          `${applies} applies landed in all; mean run ${avg(durations).toFixed(0)} ms; total ${((Date.now() - testStarted) / 1000).toFixed(1)} s`,
      );
      expect(tally.killedBeforeCommit + tally.killedAfterCommit, 'runs killed mid-way').toBeGreaterThanOrEqual(3);
      expect(tally.killedBeforeCommit, 'runs killed before their commit').toBeGreaterThanOrEqual(3);
      expect(tally.completed + tally.killedAfterCommit, 'runs whose apply landed').toBeGreaterThanOrEqual(1);

      // After all the kills, an uninterrupted run still works (no lock or half-written page left behind).
      const target: Variant = current === 'a' ? 'b' : 'a';
      const last = await apply(fleets[target], state);
      expect(last.code, last.stderr).toBe(0);
      s = await inspect(state);
      expect(check(s, 'final run')).toBe(target);
      expect(s.revision).toBe(revision + 1);
      expect(s.audit).toHaveLength(applies + 1);
    },
    90_000,
  );
});
