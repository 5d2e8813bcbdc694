// The acceptance flows, through the real `dragonfly` binary.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parse, parseAllDocuments } from 'yaml';
import { validateAgainst } from '../schemas/validate.js';
import { LmdbStore } from '../store/lmdb.js';
import { machineKey } from '../store/keys.js';
import type { MachineRecord } from '../schemas/types.js';
import { copyDir, dragonfly, ROOT, tempDir } from './cli-helpers.js';

const EXAMPLE = path.join(ROOT, 'fleet.example');
const dirs: string[] = [];
const temp = () => {
  const d = tempDir();
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function machineFiles(dir: string): string[] {
  return fs.readdirSync(path.join(dir, 'machines')).map((f) => path.join(dir, 'machines', f));
}

describe('fresh clone acceptance', () => {
  it('validates, plans with changes, applies, then plans no changes', () => {
    const state = temp();
    const v = dragonfly(['validate', '--fleet', 'fleet.example']);
    expect(v.stderr).toBe('');
    expect(v.status).toBe(0);
    expect(v.stdout).toMatch(/^The fleet is valid: \d+ machines, 3 templates, 3 assignments/);

    const p1 = dragonfly(['plan', '--fleet', 'fleet.example', '--state', state, '--detailed-exitcode']);
    expect(p1.status).toBe(2);
    expect(p1.stdout).toMatch(/^  \+ register /m);
    expect(p1.stdout).toMatch(/Plan: \d+ to add, 0 to change, 0 to reimage, 0 to retire\./);

    const a = dragonfly(['apply', '--fleet', 'fleet.example', '--state', state, '--auto-approve']);
    expect(a.stderr).toBe('');
    expect(a.status).toBe(0);
    expect(a.stdout).toContain('Apply complete!');

    const p2 = dragonfly(['plan', '--fleet', 'fleet.example', '--state', state, '--detailed-exitcode']);
    expect(p2.status).toBe(0);
    expect(p2.stdout).toContain('No changes. The fleet matches its configuration.');
    // Machines assigned but never seen are shown as waiting, not as changes.
    expect(p2.stdout).toContain('waiting for discovery');

    const m = JSON.parse(dragonfly(['machines', '--state', state, '--json']).stdout) as { name: string; phase: string }[];
    const declared = machineFiles(EXAMPLE).flatMap((f) => parseAllDocuments(fs.readFileSync(f, 'utf8')).filter((d) => d.contents));
    expect(m).toHaveLength(declared.length);
    expect(new Set(m.map((r) => r.phase))).toEqual(new Set(['Registered', 'Assigned']));

    const h = JSON.parse(dragonfly(['history', '--state', state, '--json']).stdout) as { fleetRevision: string; planHash: string; user: string }[];
    expect(h).toHaveLength(1);
    expect(h[0]!.fleetRevision).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(h[0]!.planHash).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(h[0]!.user).not.toBe('');
  });

  it('plan --json is a valid plan file with format_version', () => {
    const r = dragonfly(['plan', '--fleet', 'fleet.example', '--state', temp(), '--json']);
    expect(r.status).toBe(0);
    const plan = JSON.parse(r.stdout);
    expect(validateAgainst('plan', plan)).toEqual([]);
    expect(plan.format_version).toBe('1.1');
    // Each change and note carries the reason code a script switches on (docs/plan-json.md).
    expect(plan.changes.length).toBeGreaterThan(0);
    for (const c of plan.changes) expect(c.code, c.reason).toMatch(/^[a-z]+(-[a-z]+)*$/);
    for (const n of plan.notes) expect(n.code, n.message).toMatch(/^[a-z]+(-[a-z]+)*$/);
  });

  it('plan --markdown is a pull-request comment', () => {
    const r = dragonfly(['plan', '--fleet', 'fleet.example', '--state', temp(), '--markdown']);
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^### Dragonfly plan/);
    expect(r.stdout).toContain('<details><summary>Changes');
    expect(r.stdout).toMatch(/\*\*Plan: \d+ to add, 0 to change, 0 to reimage, 0 to retire\.\*\*/);
  });
});

describe('saved plans', () => {
  it('applies exactly a saved plan without asking', () => {
    const state = temp();
    const planFile = path.join(temp(), 'plan.json');
    expect(dragonfly(['plan', '--fleet', 'fleet.example', '--state', state, '--out', planFile]).status).toBe(0);
    const saved = JSON.parse(fs.readFileSync(planFile, 'utf8'));
    const r = dragonfly(['apply', planFile, '--fleet', 'fleet.example', '--state', state]);
    expect(r.status).toBe(0);
    const h = JSON.parse(dragonfly(['history', '--state', state, '--json']).stdout);
    expect(h[0].planHash).toBe(saved.hash);
  });

  it('refuses a plan made before a fleet file was edited, and changes nothing', () => {
    const fleet = copyDir(EXAMPLE, path.join(temp(), 'fleet'));
    const state = temp();
    const planFile = path.join(temp(), 'plan.json');
    expect(dragonfly(['plan', '--fleet', fleet, '--state', state, '--out', planFile]).status).toBe(0);
    const file = machineFiles(fleet)[0]!;
    fs.appendFileSync(file, '# edited after the plan was made\n');
    const r = dragonfly(['apply', planFile, '--fleet', fleet, '--state', state]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('DF_ERR_PLAN_STALE');
    expect(r.stderr).toContain('stale');
    expect(r.stderr).toContain('the fleet changed');
    expect(JSON.parse(dragonfly(['machines', '--state', state, '--json']).stdout)).toEqual([]);
    expect(JSON.parse(dragonfly(['history', '--state', state, '--json']).stdout)).toEqual([]);
  });

  it('refuses a plan when the store moved on under it, naming the machine', () => {
    const state = temp();
    const planFile = path.join(temp(), 'plan.json');
    expect(dragonfly(['plan', '--fleet', 'fleet.example', '--state', state, '--out', planFile]).status).toBe(0);
    expect(dragonfly(['apply', '--fleet', 'fleet.example', '--state', state, '--auto-approve']).status).toBe(0);
    const r = dragonfly(['apply', planFile, '--fleet', 'fleet.example', '--state', state]);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/stale: the store moved on from revision 0 to 1: \S+ \(52:54:00/);
  });

  it('rejects a file that is not a plan', () => {
    const bad = path.join(temp(), 'plan.json');
    fs.writeFileSync(bad, '{"format_version": "9.0"}');
    const r = dragonfly(['apply', bad, '--fleet', 'fleet.example', '--state', temp()]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('DF_ERR_PLAN_FILE');
  });
});

describe('interactive apply', () => {
  it('applies only after "yes"', () => {
    const state = temp();
    const no = dragonfly(['apply', '--fleet', 'fleet.example', '--state', state], { input: 'no\n' });
    expect(no.status).toBe(1);
    expect(no.stderr).toContain('Only "yes" will be accepted');
    expect(no.stderr).toContain('DF_ERR_APPLY_ABORTED');
    expect(JSON.parse(dragonfly(['history', '--state', state, '--json']).stdout)).toEqual([]);
    const yes = dragonfly(['apply', '--fleet', 'fleet.example', '--state', state], { input: 'yes\n' });
    expect(yes.status).toBe(0);
    expect(JSON.parse(dragonfly(['history', '--state', state, '--json']).stdout)).toHaveLength(1);
  });
});

describe('discovered machines', () => {
  it('shows provisioning over existing partitions as a reimage that names what is lost', async () => {
    const fleet = path.join(temp(), 'fleet');
    fs.mkdirSync(fleet);
    fs.writeFileSync(
      path.join(fleet, 'fleet.yaml'),
      `apiVersion: dragonfly.computer/v1
kind: Machine
metadata: {name: web-01, labels: {role: web}}
spec: {mac: 52:54:00:ab:cd:01}
---
apiVersion: dragonfly.computer/v1
kind: Template
metadata: {name: ubuntu}
spec:
  image: {url: "http://images.lan/u.raw.zst", sha256: "${'ab'.repeat(32)}"}
  actions:
    - partition: {disk: "\${disk}", partitions: [{size: 512MiB, type: efi, format: vfat}, {size: rest, format: ext4}]}
    - image2disk: {partition: 2}
    - writefile: {partition: 2, path: /etc/hostname, content: "\${machine.name}\\n"}
---
apiVersion: dragonfly.computer/v1
kind: Assignment
metadata: {name: web}
spec: {template: ubuntu, selector: {role: web}}
`,
    );
    const state = temp();
    expect(dragonfly(['apply', '--fleet', fleet, '--state', state, '--auto-approve']).status).toBe(0);
    // What the boot server records when Mage reports (written here the way it will write it).
    const store = LmdbStore.open(state);
    const rec = await store.read((s) => s.get<MachineRecord>(machineKey('52:54:00:ab:cd:01')));
    const hardware = {
      disks: [
        { name: 'sda', sizeBytes: 64e9, partitions: [{ name: 'sda1', fstype: 'ext4', label: 'old-root' }] },
        { name: 'sdb', sizeBytes: 16e9, removable: true, transport: 'usb' },
      ],
      nics: [{ mac: '52:54:00:ab:cd:01' }],
    };
    await store.commit({
      compare: [{ key: rec!.key, modRevision: rec!.modRevision }],
      put: [{ key: rec!.key, value: { ...rec!.value, hardware } }],
    });
    await store.close();

    const p = dragonfly(['plan', '--fleet', fleet, '--state', state, '--detailed-exitcode']);
    expect(p.status).toBe(2);
    expect(p.stdout).toContain('  ! reimage web-01 (52:54:00:ab:cd:01, CensusAbleQualityParent): REIMAGE with ubuntu@1; the disks will be wiped');
    expect(p.stdout).toContain('will be lost: /dev/sda: sda1 (ext4 "old-root")');
    expect(p.stdout).toContain('Plan: 0 to add, 0 to change, 1 to reimage, 0 to retire.');

    const json = JSON.parse(dragonfly(['plan', '--fleet', fleet, '--state', state, '--json']).stdout);
    const wf = json.changes[0].workflow;
    expect(wf.disk).toBe('/dev/sda');
    expect(wf.actions[2]).toEqual({ action: 'writefile', params: { partition: 2, path: '/etc/hostname', content: 'web-01\n' } });
  });
});

describe('small commands', () => {
  it('name prints the memorable name alone on the last line', () => {
    const r = dragonfly(['name', '52-54-00-AB-CD-01']);
    expect(r.status).toBe(0);
    expect(r.stdout.trimEnd().split('\n').at(-1)).toBe('CensusAbleQualityParent');
    const bad = dragonfly(['name', '52:54:00:zz:cd:01']);
    expect(bad.status).toBe(1);
    expect(bad.stderr).toContain('DF_ERR_BAD_MAC');
  });

  it('schemas --crd prints four CustomResourceDefinitions', () => {
    const r = dragonfly(['schemas', '--crd']);
    expect(r.status).toBe(0);
    const docs = parseAllDocuments(r.stdout).map((d) => d.toJS());
    expect(docs.map((d) => d.metadata.name)).toEqual([
      'machines.dragonfly.computer',
      'templates.dragonfly.computer',
      'assignments.dragonfly.computer',
      'workflows.dragonfly.computer',
    ]);
    expect(parse(r.stdout.split('---\n')[0]!).spec.versions[0].name).toBe('v1');
  });

  it('usage errors exit 1 with a code', () => {
    for (const args of [['frobnicate'], ['plan', '--fleet', 'fleet.example', '--bogus'], ['validate'], ['machines', '--fleet', 'x']]) {
      const r = dragonfly(args);
      expect(r.status, args.join(' ')).toBe(1);
      expect(r.stderr, args.join(' ')).toContain('DF_ERR_USAGE');
    }
    expect(dragonfly(['validate', '--fleet', '/nonexistent']).stderr).toContain('DF_ERR_FLEET_DIR');
  });

  it('--help documents every command', () => {
    const r = dragonfly(['--help']);
    for (const c of ['validate', 'plan', 'apply', 'machines', 'history', 'name', 'schemas']) {
      expect(r.stdout).toContain(`  ${c} `);
      expect(dragonfly([c, '--help']).stdout).toMatch(new RegExp(`^Usage: dragonfly ${c}`));
    }
  });
});
