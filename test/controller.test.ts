// The GitOps controller against a real LMDB store: fail closed (an invalid revision freezes it), manual
// mode, suspend/resume from the store, the next wave of a rollout when a workflow finishes (store
// notifications, no polling), and directory mode: each kind of editor save is exactly one reconcile.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { recordHardware } from '../boot/observe.js';
import { claimWorkflow, finishWorkflow } from '../boot/workflow-progress.js';
import { CONDITION_CODES, Controller, type ControllerLog, type FleetRevision } from '../reconciler/controller.js';
import { readObserved } from '../reconciler/observed.js';
import { blankHardware, fleetFiles, macOf, ubuntuTemplate } from '../reconciler/test-builders.js';
import { followDirectory } from '../reconciler/sources/follow.js';
import { DragonflyError } from '../schemas/errors.js';
import type { MachineRecord, Workflow } from '../schemas/types.js';
import { AUDIT, CONTROLLER_SUSPENDED, machineKey } from '../store/keys.js';
import { LmdbStore } from '../store/lmdb.js';
import { dragonfly } from './cli-helpers.js';
import { until } from './process-helpers.js';

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Logged {
  level: string;
  msg: string;
  obj: object;
}

async function setup(opts: { manual?: boolean; now?: () => Date } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-controller-'));
  const store = LmdbStore.open(path.join(dir, 'state'));
  const logged: Logged[] = [];
  const log: ControllerLog = {
    info: (obj, msg = '') => logged.push({ level: 'info', msg, obj }),
    warn: (obj, msg = '') => logged.push({ level: 'warn', msg, obj }),
    error: (obj, msg = '') => logged.push({ level: 'error', msg, obj }),
  };
  const controller = await Controller.start({ store, log, source: 'test', ...opts });
  cleanups.push(async () => {
    await controller.close();
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const offer = async (rev: FleetRevision) => {
    controller.offer(rev);
    await controller.idle();
  };
  return { dir, store, controller, logged, offer };
}

const TWO_MACHINES = fleetFiles({
  machines: [
    { name: 'web-01', mac: macOf(1), labels: { role: 'web' } },
    { name: 'web-02', mac: macOf(2), labels: { role: 'web' } },
  ],
  templates: [ubuntuTemplate()],
  assignments: [{ name: 'web', template: 'ubuntu-24.04', maxParallel: 1 }],
});

const record = (store: LmdbStore, mac: string) => store.read((s) => s.get<MachineRecord>(machineKey(mac))?.value);

describe('controller', () => {
  it('applies a valid revision, freezes on an invalid one (file:line:col, nothing applied, audited), applies the next valid one', async () => {
    const { store, controller, offer } = await setup();
    await offer({ revision: 'c1', files: TWO_MACHINES, author: 'Ada <ada@example.com>' });
    expect(controller.current()).toMatchObject({ applied: { revision: 'c1', author: 'Ada <ada@example.com>' }, seen: { revision: 'c1', valid: true } });
    expect((await record(store, macOf(1)))?.labels).toEqual({ role: 'web' });

    // A broken edit: a label change plus a YAML error. Nothing of it reaches the store.
    const broken = TWO_MACHINES.map((f) => (f.path === 'machines.yaml' ? { ...f, text: f.text.replace('role: web', 'role: db').replace('mac:', 'mac: [') } : f));
    const before = await store.read((s) => s.get(machineKey(macOf(1)))!.modRevision);
    await offer({ revision: 'c2', files: broken, author: 'Bob <bob@example.com>' });
    const status = controller.current();
    expect(status.seen).toMatchObject({ revision: 'c2', valid: false });
    expect(status.seen!.errors[0]).toMatch(/^machines\.yaml:\d+:\d+: DF_ERR_YAML_SYNTAX/);
    expect(status.applied!.revision).toBe('c1');
    expect(await store.read((s) => s.get(machineKey(macOf(1)))!.modRevision)).toBe(before);
    const audit = await store.read((s) => s.list<{ outcome: string; fleetRevision: string; author?: string }>(AUDIT).map((a) => a.value));
    expect(audit.map((a) => [a.outcome, a.fleetRevision, a.author])).toEqual([
      ['applied', 'c1', 'Ada <ada@example.com>'],
      ['rejected', 'c2', 'Bob <bob@example.com>'],
    ]);

    // Frozen: a store change does not make it apply anything from an older revision.
    await recordHardware(store, macOf(1), blankHardware(macOf(1)), '10.0.0.1');
    await new Promise((r) => setTimeout(r, 300));
    await controller.idle();
    expect((await readObserved(store)).workflows.size).toBe(0);

    const fixed = TWO_MACHINES.map((f) => (f.path === 'machines.yaml' ? { ...f, text: f.text.replace('role: web', 'role: db') } : f));
    await offer({ revision: 'c3', files: fixed });
    expect(controller.current()).toMatchObject({ applied: { revision: 'c3' }, seen: { revision: 'c3', valid: true } });
    expect((await record(store, macOf(1)))?.labels).toEqual({ role: 'db' });
  });

  it('manual mode reports what an apply would do and writes nothing else', async () => {
    const { store, controller, offer } = await setup({ manual: true });
    await offer({ revision: 'c1', files: TWO_MACHINES });
    expect(controller.current().pending.summary).toBe('Plan: 2 to add, 0 to change, 0 to reimage, 0 to retire.');
    expect(controller.current().pending.lines).toHaveLength(2);
    expect(controller.current().condition).toMatchObject({ code: 'PlanPending', message: 'manual mode: revision c1 has 2 changes waiting for `dragonfly apply`' });
    expect(controller.current().applied).toBeUndefined();
    expect(await record(store, macOf(1))).toBeUndefined();
  });

  it('`dragonfly suspend` (another process) stops applying; status says so; `dragonfly resume` applies what waited', async () => {
    const { dir, store, controller, offer } = await setup();
    const state = path.join(dir, 'state');
    const suspended = dragonfly(['suspend', '--state', state, '--reason', 'change freeze']);
    expect(suspended.status, suspended.stderr).toBe(0);
    await offer({ revision: 'c1', files: TWO_MACHINES });
    expect(controller.current()).toMatchObject({ suspended: true, pending: { summary: 'Plan: 2 to add, 0 to change, 0 to reimage, 0 to retire.' } });
    expect(await record(store, macOf(1))).toBeUndefined();
    const status = dragonfly(['status', '--state', state]);
    expect(status.stdout).toMatch(/Pending \(suspended: `dragonfly resume`\): Plan: 2 to add/);
    expect(status.stdout).toMatch(/Suspended at \S+ by \S+: change freeze/);
    expect(dragonfly(['resume', '--state', state]).status).toBe(0);
    await until('the resumed apply', async () => (await record(store, macOf(1))) !== undefined);
    await controller.idle();
    expect(controller.current()).toMatchObject({ suspended: false, applied: { revision: 'c1' } });
  });

  it('status carries a condition code: Applied, RevisionInvalid and RevisionUnreadable with their DF codes, Suspended', async () => {
    let clock = Date.parse('2025-06-01T12:00:00.000Z');
    const { dir, store, controller, offer } = await setup({ now: () => new Date((clock += 1000)) });
    const state = path.join(dir, 'state');
    expect(controller.current().condition.code).toBe('Starting');

    await offer({ revision: 'c1', files: TWO_MACHINES });
    const applied = controller.current().condition;
    expect(applied).toEqual({ code: 'Applied', message: 'revision c1 is applied: the store matches it', since: controller.current().updatedAt });
    // Another round in the same condition keeps the time it was entered.
    await offer({ revision: 'c1', files: TWO_MACHINES });
    expect(controller.current().condition).toEqual(applied);
    expect(controller.current().updatedAt > applied.since).toBe(true);
    const ok = dragonfly(['status', '--state', state]);
    expect(ok.status, ok.stderr).toBe(0);
    expect(ok.stdout).toContain(`Condition: Applied since ${applied.since}\n`);

    const broken = TWO_MACHINES.map((f) => (f.path === 'machines.yaml' ? { ...f, text: f.text.replace('mac:', 'mac: [') } : f));
    await offer({ revision: 'c2', files: broken });
    expect(controller.current().condition).toMatchObject({ code: 'RevisionInvalid', since: controller.current().updatedAt, errorCodes: ['DF_ERR_YAML_SYNTAX'] });
    const invalid = dragonfly(['status', '--state', state]);
    expect(invalid.status).toBe(1);
    expect(invalid.stdout).toMatch(/^Condition: RevisionInvalid since \S+ \(DF_ERR_YAML_SYNTAX\)$/m);
    const json = JSON.parse(dragonfly(['status', '--state', state, '--json']).stdout) as { controller: { condition: { code: string; errorCodes: string[] } } };
    expect(json.controller.condition).toMatchObject({ code: 'RevisionInvalid', errorCodes: ['DF_ERR_YAML_SYNTAX'] });

    await offer({ revision: 'c3', files: TWO_MACHINES, errors: [new DragonflyError('DF_ERR_FILE_READ', 'machines.yaml: permission denied')] });
    expect(controller.current().condition).toMatchObject({ code: 'RevisionUnreadable', errorCodes: ['DF_ERR_FILE_READ'] });

    await offer({ revision: 'c4', files: TWO_MACHINES });
    expect(controller.current().condition).toMatchObject({ code: 'Applied', message: 'revision c4 is applied: the store matches it' });
    expect(controller.current().condition.errorCodes).toBeUndefined();

    await store.commit({ put: [{ key: CONTROLLER_SUSPENDED, value: { at: new Date(clock).toISOString(), by: 'test' } }] });
    await until('suspended', () => controller.current().condition.code === 'Suspended');
    expect(controller.current().condition.message).toBe('suspended: revision c4 is planned, not applied (nothing waiting); `dragonfly resume` applies again');
    expect(dragonfly(['status', '--state', state]).stdout).toMatch(/^Condition: Suspended since \S+$/m);
  });

  it('docs/status.md describes every condition code once, and no other', () => {
    const doc = fs.readFileSync(new URL('../docs/status.md', import.meta.url), 'utf8');
    const rows = [...doc.matchAll(/^\| `([A-Za-z]+)` \|/gm)].map((m) => m[1]);
    expect(rows.sort()).toEqual([...CONDITION_CODES].sort());
  });

  it('a rollout with maxParallel 1: the next machine starts when the first one’s workflow finishes (store notifications)', async () => {
    const { store, controller, offer } = await setup();
    await offer({ revision: 'c1', files: TWO_MACHINES });
    // Both machines PXE boot and Mage reports blank disks: the controller re-plans on its own.
    await recordHardware(store, macOf(1), blankHardware(macOf(1)), '10.0.0.1');
    await recordHardware(store, macOf(2), blankHardware(macOf(2)), '10.0.0.2');
    await until('the first workflow', async () => (await readObserved(store)).workflows.size === 1);
    await controller.idle();
    const first = [...(await readObserved(store)).workflows.values()][0]!.value;
    expect(controller.current().notes.some((n) => n.kind === 'deferred')).toBe(true);
    await claimWorkflow(store, first.id, { secretSha256: 'a'.repeat(64), ip: '10.0.0.1' });
    await finishWorkflow(store, first.id, { state: 'succeeded' });
    await until('the second workflow', async () => (await readObserved(store)).workflows.size === 2);
    const all = [...(await readObserved(store)).workflows.values()].map((w) => w.value as Workflow);
    expect(new Set(all.map((w) => w.mac))).toEqual(new Set([macOf(1), macOf(2)]));
    await controller.idle();
    expect(controller.current().notes.filter((n) => n.kind === 'deferred')).toEqual([]);
  });
});

describe('directory mode', () => {
  it('an in-place edit, an atomic-rename save and a multi-chunk write are one reconcile each', async () => {
    const { dir, store, controller, logged } = await setup();
    const fleet = path.join(dir, 'fleet');
    fs.mkdirSync(fleet);
    for (const f of TWO_MACHINES) fs.writeFileSync(path.join(fleet, f.path), f.text);
    const follower = await followDirectory(fleet, { onRevision: (r) => controller.offer(r), onError: (e) => logged.push({ level: 'error', msg: e.message, obj: {} }) });
    cleanups.push(() => follower.close());
    const loads = () => logged.filter((l) => l.msg === 'fleet revision loaded').length;
    await until('the first reconcile', () => loads() === 1);
    const file = path.join(fleet, 'machines.yaml');
    const quiet = async () => {
      await new Promise((r) => setTimeout(r, 500));
      await controller.idle();
    };

    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace('role: web', 'role: db')); // in place
    await until('the in-place edit', () => loads() === 2);
    await quiet();
    expect(loads()).toBe(2);

    const tmp = path.join(fleet, '.machines.yaml.tmp-1234'); // write a temp file, rename it over the target
    fs.writeFileSync(tmp, fs.readFileSync(file, 'utf8').replace('role: db', 'role: web'));
    fs.renameSync(tmp, file);
    await until('the atomic-rename save', () => loads() === 3);
    await quiet();
    expect(loads()).toBe(3);

    const text = fs.readFileSync(file, 'utf8').replace('role: web', 'role: db');
    const fd = fs.openSync(file, 'w'); // three chunks with pauses, as a slow editor or a network drive writes
    for (const part of [text.slice(0, 40), text.slice(40, 120), text.slice(120)]) {
      fs.writeSync(fd, part);
      await new Promise((r) => setTimeout(r, 20));
    }
    fs.closeSync(fd);
    await until('the multi-chunk write', () => loads() === 4);
    await quiet();
    expect(loads()).toBe(4);
    expect((await record(store, macOf(1)))?.labels).toEqual({ role: 'db' });
    expect(controller.current().applied!.revision).toMatch(/^sha256:/);
  });
});
