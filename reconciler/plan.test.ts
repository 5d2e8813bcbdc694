// planFleet is pure: every rule is checked with fleets and observed state built in memory.
import { describe, expect, it } from 'vitest';
import { chooseInstallDisk, devicePath } from '../schemas/install-disk.js';
import { validateAgainst } from '../schemas/validate.js';
import type { Change, Note } from '../schemas/types.js';
import type { Fleet } from './fleet.js';
import type { Observed } from './observed.js';
import fs from 'node:fs';
import { CHANGE_ACTION, CHANGE_CODES, changeReason, NOTE_CODES, NOTE_KIND, noteMessage } from '../schemas/plan-reasons.js';
import { hasChanges, planFleet, planHash, PLAN_FORMAT_VERSION } from './plan.js';
import {
  blankHardware,
  buildFleet,
  buildObserved,
  discovered,
  disk,
  everyReasonFixture,
  fleetMachine,
  GB,
  hardware,
  macOf,
  registered,
  SEEN_AT,
  ubuntuTemplate,
  UBUNTU_IMAGE,
  usedDisk,
  usedHardware,
  type AssignmentSketch,
  type FleetSketch,
  type MachineSketch,
  type WorkflowSketch,
} from './test-builders.js';

const NOW = new Date('2025-06-01T12:00:00.000Z');
const plan = (fleet: Fleet, observed: Observed) => planFleet(fleet, observed, { now: NOW });

const web = (n: number, extra: Partial<MachineSketch> = {}): MachineSketch => ({
  name: `web-0${n}`,
  mac: macOf(n),
  labels: { role: 'web', rack: 'r1' },
  ...extra,
});
const WEB: AssignmentSketch = { name: 'web', template: 'ubuntu-24.04' };
const webFleet = (machines: MachineSketch[], assignment: Partial<AssignmentSketch> = {}, more: Partial<FleetSketch> = {}) =>
  buildFleet({ machines, assignments: [{ ...WEB, ...assignment }], ...more });

const ref = (n: number, name = `web-0${n}`) => ({ name, mac: macOf(n), memorableName: fleetNames[n]! });
// Memorable names of the test MACs (52:54:00:ab:cd:NN), per DESIGN.md's rule.
const fleetNames: Record<number, string> = {
  1: 'CensusAbleQualityParent',
  2: 'CensusAbleQualityPark',
  3: 'CensusAbleQualityParrot',
  4: 'CensusAbleQualityParty',
  5: 'CensusAbleQualityPass',
  9: 'CensusAbleQualityPatrol',
};

const desired = (generation = 1, template = 'ubuntu-24.04', assignment = 'web') => ({ assignment, template, generation });
const NO_SUMMARY = { add: 0, change: 0, reimage: 0, retire: 0, power: 0 };
const kinds = (notes: Note[]) => notes.map((n) => [n.kind, n.machine?.name]);
const actions = (changes: Change[]) => changes.map((c) => [c.action, c.machine.name]);

function wf(id: string, n: number, state: WorkflowSketch['state'], extra: Partial<WorkflowSketch> = {}): WorkflowSketch {
  return { id, mac: macOf(n), machine: `web-0${n}`, assignment: 'web', template: 'ubuntu-24.04', generation: 1, state, modRevision: 2, ...extra };
}

/** The workflow the default template resolves to on `disk` for web-0n. */
function intentFor(n: number, disk: string, extra: { generation?: number; reimage?: boolean } = {}) {
  return {
    assignment: 'web',
    template: 'ubuntu-24.04',
    generation: extra.generation ?? 1,
    reimage: extra.reimage ?? false,
    disk,
    // What the hardware report says of that disk (test-builders: blank/used hardware), for Mage to check.
    diskIdentity: { sizeBytes: { '/dev/nvme0n1': 500 * GB, '/dev/sda': 2000 * GB }[disk]!, serial: null, wwn: null },
    image: { ...UBUNTU_IMAGE },
    timeoutSeconds: 1800,
    actions: [
      {
        action: 'partition',
        params: {
          disk,
          table: 'gpt',
          partitions: [
            { name: 'efi', size: '512MiB', type: 'efi', format: 'vfat' },
            { name: 'root', size: 'rest', type: 'linux', format: 'ext4' },
          ],
        },
      },
      { action: 'image2disk', params: { disk } },
      { action: 'writefile', params: { partition: 2, path: '/etc/hostname', content: `web-0${n}\n`, mode: '0644' } },
      { action: 'writefile', params: { partition: 2, path: '/etc/dragonfly.env', content: `SERVER=\${server.url}\nMAC=${macOf(n)}\n` } },
      { action: 'kexec', params: { partition: 2, kernel: '/boot/vmlinuz', initrd: '/boot/initrd.img', cmdline: 'root=LABEL=root ro' } },
    ],
  };
}

describe('planFleet: the plan itself', () => {
  it('records the format version, both revisions and when it was made', () => {
    const fleet = webFleet([web(1)]);
    const p = plan(fleet, buildObserved({ revision: 7 }));
    expect(p.format_version).toBe(PLAN_FORMAT_VERSION);
    expect(p.fleetRevision).toBe(fleet.revision);
    expect(p.fleetRevision).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(p.storeRevision).toBe(7);
    expect(p.createdAt).toBe('2025-06-01T12:00:00.000Z');
  });
});

describe('planFleet: registration', () => {
  it('registers a machine the store has never seen, with the record apply will write', () => {
    const fleet = webFleet([web(1)]);
    const p = plan(fleet, buildObserved());
    expect(p.changes).toEqual([
      {
        action: 'register',
        machine: ref(1),
        code: 'declared-unseen',
        reason: 'declared in git; not seen on the network yet',
        record: { name: 'web-01', spec: { mac: macOf(1) }, labels: { role: 'web', rack: 'r1' }, desired: desired() },
      },
    ]);
    // Assigned but never seen: nothing can be installed yet, and that is a note, not a change.
    expect(p.notes).toEqual([
      {
        kind: 'waiting-discovery',
        code: 'awaiting-discovery',
        machine: ref(1),
        message: 'ubuntu-24.04@1 waits for discovery: PXE boot the machine so Mage can report its disks',
        facts: { wanted: { template: 'ubuntu-24.04', generation: 1 } },
      },
    ]);
    expect(p.summary).toEqual({ ...NO_SUMMARY, add: 1 });
    expect(p.fingerprints).toEqual({ [macOf(1)]: 'absent' });
  });

  it('registers a machine without an assignment with desired: null and no notes', () => {
    const fleet = buildFleet({ machines: [web(1, { labels: { role: 'spare' } })] });
    const p = plan(fleet, buildObserved());
    expect(p.changes).toEqual([
      {
        action: 'register',
        machine: ref(1),
        code: 'declared-unseen',
        reason: 'declared in git; not seen on the network yet',
        record: { name: 'web-01', spec: { mac: macOf(1) }, labels: { role: 'spare' }, desired: null },
      },
    ]);
    expect(p.notes).toEqual([]);
  });

  it('registers a machine that PXE discovered, saying when it was seen', () => {
    const fleet = webFleet([web(1)]);
    const p = plan(fleet, buildObserved({ machines: [discovered(macOf(1), { modRevision: 4 })] }));
    expect(actions(p.changes)).toEqual([['register', 'web-01']]);
    expect(p.changes[0]).toEqual({
      action: 'register',
      machine: ref(1),
      code: 'declared-after-discovery',
      reason: `seen by pxe at ${SEEN_AT}; now declared in git`,
      facts: { seen: { source: 'pxe', at: SEEN_AT } },
      record: { name: 'web-01', spec: { mac: macOf(1) }, labels: { role: 'web', rack: 'r1' }, desired: desired() },
    });
    expect(kinds(p.notes)).toEqual([['waiting-discovery', 'web-01']]);
    expect(p.fingerprints).toEqual({ [macOf(1)]: '4' });
  });

  it('registers and provisions in one plan a discovered machine whose disks Mage reported', () => {
    const fleet = webFleet([web(1)]);
    const p = plan(fleet, buildObserved({ machines: [discovered(macOf(1), { hardware: blankHardware(macOf(1)), modRevision: 4 })] }));
    expect(actions(p.changes)).toEqual([
      ['register', 'web-01'],
      ['provision', 'web-01'],
    ]);
    expect(p.notes).toEqual([]);
    expect(p.summary).toEqual({ ...NO_SUMMARY, add: 2 });
  });

  it('registers again a machine that was retired and is declared in git again', () => {
    const fleet = buildFleet({ machines: [web(1)] });
    const p = plan(fleet, buildObserved({ machines: [{ mac: macOf(1), name: 'web-01', phase: 'Retired', modRevision: 3 }] }));
    expect(p.changes).toEqual([
      {
        action: 'register',
        machine: ref(1),
        code: 'declared-after-retirement',
        reason: 'declared in git again after being retired',
        record: { name: 'web-01', spec: { mac: macOf(1) }, labels: { role: 'web', rack: 'r1' }, desired: null },
      },
    ]);
  });
});

describe('planFleet: updates', () => {
  it('updates labels and spec fields, listing each changed path with before and after', () => {
    const before = webFleet([web(1)]);
    const after = webFleet([web(1, { labels: { role: 'web', rack: 'r2' }, disk: '/dev/sda', protected: true })]);
    const observed = buildObserved({ machines: [registered(before, 'web-01', { modRevision: 3 })] });
    const p = plan(after, observed);
    expect(p.changes).toEqual([
      {
        action: 'update',
        machine: ref(1),
        code: 'git-changed',
        reason: 'git changed labels, spec.disk, spec.protected',
        diff: [
          { path: 'labels', before: { role: 'web', rack: 'r1' }, after: { role: 'web', rack: 'r2' } },
          { path: 'spec.disk', before: null, after: '/dev/sda' },
          { path: 'spec.protected', before: null, after: true },
        ],
        record: {
          name: 'web-01',
          spec: { mac: macOf(1), disk: '/dev/sda', protected: true },
          labels: { role: 'web', rack: 'r2' },
          desired: desired(),
        },
      },
    ]);
    expect(p.summary).toEqual({ ...NO_SUMMARY, change: 1 });
  });

  it('updates the assignment when a machine leaves it (desired becomes null)', () => {
    const before = webFleet([web(1)]);
    const after = webFleet([web(1, { labels: { role: 'spare', rack: 'r1' } })]);
    const observed = buildObserved({ machines: [registered(before, 'web-01', { modRevision: 3 })] });
    const p = plan(after, observed);
    expect(p.changes).toHaveLength(1);
    expect(p.changes[0]!.action).toBe('update');
    expect(p.changes[0]!.reason).toBe('git changed labels, assignment');
    expect(p.changes[0]!.diff).toEqual([
      { path: 'labels', before: { role: 'web', rack: 'r1' }, after: { role: 'spare', rack: 'r1' } },
      { path: 'assignment', before: desired(), after: null },
    ]);
    expect(p.changes[0]!.record!.desired).toBeNull();
  });

  it('updates the assignment when its template changes', () => {
    const before = webFleet([web(1)], {}, { templates: [ubuntuTemplate(), ubuntuTemplate({ name: 'ubuntu-26.04' })] });
    const after = webFleet([web(1)], { template: 'ubuntu-26.04' }, { templates: [ubuntuTemplate(), ubuntuTemplate({ name: 'ubuntu-26.04' })] });
    const observed = buildObserved({ machines: [registered(before, 'web-01', { modRevision: 3 })] });
    const p = plan(after, observed);
    expect(p.changes[0]).toMatchObject({
      action: 'update',
      code: 'git-changed',
      reason: 'git changed assignment',
      diff: [{ path: 'assignment', before: desired(1, 'ubuntu-24.04'), after: desired(1, 'ubuntu-26.04') }],
    });
  });

  it('plans no change when git and the store agree (a Ready machine)', () => {
    const fleet = webFleet([web(1)]);
    const observed = buildObserved({
      machines: [registered(fleet, 'web-01', { hardware: usedHardware(macOf(1)), installed: { template: 'ubuntu-24.04', generation: 1 }, modRevision: 5 })],
    });
    expect(observed.machines.get(macOf(1))!.value.phase).toBe('Ready');
    const p = plan(fleet, observed);
    expect(p.changes).toEqual([]);
    expect(p.notes).toEqual([]);
    expect(p.summary).toEqual(NO_SUMMARY);
    expect(hasChanges(p)).toBe(false);
  });

  it('waiting for discovery is a note, not a change', () => {
    const fleet = webFleet([web(1)]);
    const p = plan(fleet, buildObserved({ machines: [registered(fleet, 'web-01', { modRevision: 2 })] }));
    expect(p.changes).toEqual([]);
    expect(hasChanges(p)).toBe(false);
    expect(p.notes).toEqual([
      {
        kind: 'waiting-discovery',
        code: 'awaiting-discovery',
        machine: ref(1),
        message: 'ubuntu-24.04@1 waits for discovery: PXE boot the machine so Mage can report its disks',
        facts: { wanted: { template: 'ubuntu-24.04', generation: 1 } },
      },
    ]);
    expect(p.summary).toEqual(NO_SUMMARY);
  });
});

describe('planFleet: provisioning', () => {
  it('provisions a discovered machine with blank disks: template, generation, disk by rule, variables substituted', () => {
    const fleet = webFleet([web(1)]);
    const hw = blankHardware(macOf(1));
    const p = plan(fleet, buildObserved({ machines: [registered(fleet, 'web-01', { hardware: hw, modRevision: 3 })] }));
    // The rule of schemas/install-disk.ts: solid-state before rotational, never USB.
    expect(devicePath(chooseInstallDisk(hw)!)).toBe('/dev/nvme0n1');
    expect(p.changes).toEqual([{ action: 'provision', machine: ref(1), code: 'first-install', reason: 'first install of ubuntu-24.04@1', workflow: intentFor(1, '/dev/nvme0n1') }]);
    expect(p.changes[0]).not.toHaveProperty('wipes');
    const writefile = p.changes[0]!.workflow!.actions[2]!.params as { content: string };
    expect(writefile.content).toBe('web-01\n');
    // ${server.url} is for the boot server to fill in.
    expect((p.changes[0]!.workflow!.actions[3]!.params as { content: string }).content).toContain('${server.url}');
    expect(p.notes).toEqual([]);
    expect(p.summary).toEqual({ ...NO_SUMMARY, add: 1 });
  });

  it('substitutes every kind of variable; $${ is a literal ${', () => {
    const template = ubuntuTemplate({
      actions: [
        { partition: { disk: '${disk}', partitions: [{ size: 'rest', format: 'ext4' }] } },
        {
          writefile: {
            partition: 1,
            path: '/etc/motd',
            content: '${machine.name} ${machine.memorableName} ${machine.mac} ${machine.labels.rack} ${disk} ${image.url} ${server.url} $${machine.name}',
          },
        },
      ],
    });
    const fleet = webFleet([web(1)], {}, { templates: [template] });
    const p = plan(fleet, buildObserved({ machines: [registered(fleet, 'web-01', { hardware: blankHardware(macOf(1)), modRevision: 3 })] }));
    expect(p.changes[0]!.workflow!.actions).toEqual([
      { action: 'partition', params: { disk: '/dev/nvme0n1', partitions: [{ size: 'rest', format: 'ext4' }] } },
      {
        action: 'writefile',
        params: {
          partition: 1,
          path: '/etc/motd',
          content: `web-01 CensusAbleQualityParent ${macOf(1)} r1 /dev/nvme0n1 ${UBUNTU_IMAGE.url} \${server.url} \${machine.name}`,
        },
      },
    ]);
  });

  it('installs on spec.disk when the Machine names one', () => {
    const fleet = webFleet([web(1, { disk: '/dev/sda' })]);
    const p = plan(fleet, buildObserved({ machines: [registered(fleet, 'web-01', { hardware: blankHardware(macOf(1)), modRevision: 3 })] }));
    expect(p.changes).toEqual([{ action: 'provision', machine: ref(1), code: 'first-install', reason: 'first install of ubuntu-24.04@1', workflow: intentFor(1, '/dev/sda') }]);
  });

  it("carries the install disk's serial and WWN from the report, so Mage can refuse another disk", () => {
    const fleet = webFleet([web(1)]);
    const hw = hardware([disk('nvme0n1', 500 * GB, { serial: 'S4EWNX0N123', wwn: 'eui.002538591150a1b2' }), disk('sda', 4000 * GB, { rotational: true, serial: 'ZL2ABCD' })], [macOf(1)]);
    const p = plan(fleet, buildObserved({ machines: [registered(fleet, 'web-01', { hardware: hw, modRevision: 3 })] }));
    expect(p.changes[0]!.workflow!.diskIdentity).toEqual({ sizeBytes: 500 * GB, serial: 'S4EWNX0N123', wwn: 'eui.002538591150a1b2' });
  });

  // The attack: a forged report (no claimed workflow's secret) names the 4 TB data disk as the only one.
  it('an unverified hardware report is drift, and the plan keeps using the stored report', () => {
    const fleet = webFleet([web(1)]);
    const forged = hardware([disk('sdb', 4000 * GB, { serial: 'DATA-DISK' })], [macOf(1)]);
    const rec = registered(fleet, 'web-01', { hardware: blankHardware(macOf(1)), modRevision: 3 });
    const p = plan(fleet, buildObserved({ machines: [{ ...rec, unverifiedHardware: { hardware: forged, at: SEEN_AT, ip: '10.6.6.6' } }] }));
    expect(p.changes).toEqual([{ action: 'provision', machine: ref(1), code: 'first-install', reason: 'first install of ubuntu-24.04@1', workflow: intentFor(1, '/dev/nvme0n1') }]);
    expect(p.notes).toContainEqual({
      kind: 'drift',
      code: 'unverified-hardware',
      machine: ref(1),
      facts: { unverified: { disks: 1, ip: '10.6.6.6', at: SEEN_AT } },
      message: `an unverified hardware report (1 disks, from 10.6.6.6 at ${SEEN_AT}) differs from the stored one; plans use the stored one until a Mage that claimed a workflow reports`,
    });
  });

  it('skips disks smaller than the image when choosing', () => {
    const fleet = webFleet([web(1)]);
    const hw = hardware([disk('nvme0n1', 2 * GB), disk('sda', 100 * GB, { rotational: true })], [macOf(1)]);
    const p = plan(fleet, buildObserved({ machines: [registered(fleet, 'web-01', { hardware: hw, modRevision: 3 })] }));
    // The image is 4GiB: the 2 GB NVMe cannot hold it.
    expect(p.changes[0]!.workflow!.disk).toBe('/dev/sda');
  });

  it('is blocked when no reported disk can receive the OS', () => {
    const fleet = webFleet([web(1)]);
    const hw = hardware([disk('sdb', 64 * GB, { transport: 'usb', removable: true })], [macOf(1)]);
    const p = plan(fleet, buildObserved({ machines: [registered(fleet, 'web-01', { hardware: hw, modRevision: 3 })] }));
    expect(p.changes).toEqual([]);
    expect(p.notes).toEqual([
      { kind: 'blocked', code: 'no-install-disk', machine: ref(1), message: 'no install disk: none of the reported disks is fixed, non-USB and large enough; set spec.disk', facts: { wanted: { template: 'ubuntu-24.04', generation: 1 } } },
    ]);
  });

  it('a first install over disks that hold partitions is a reimage naming what is wiped', () => {
    const fleet = webFleet([web(1)]);
    const p = plan(fleet, buildObserved({ machines: [registered(fleet, 'web-01', { hardware: usedHardware(macOf(1)), modRevision: 3 })] }));
    expect(p.changes).toEqual([
      {
        action: 'reimage',
        machine: ref(1),
        code: 'first-install-over-data',
        reason: 'first install over a disk that already holds data',
        workflow: intentFor(1, '/dev/nvme0n1', { reimage: true }),
        wipes: ['/dev/nvme0n1: nvme0n1p1 (vfat "EFI")', '/dev/nvme0n1: nvme0n1p2 (ext4 "root")'],
      },
    ]);
    expect(p.summary).toEqual({ ...NO_SUMMARY, reimage: 1 });
  });

  it('a filesystem on the whole install disk is named as lost too', () => {
    const fleet = webFleet([web(1, { disk: '/dev/sda' })]);
    const hw = hardware([disk('sda', 100 * GB, { fstype: 'xfs' })], [macOf(1)]);
    const p = plan(fleet, buildObserved({ machines: [registered(fleet, 'web-01', { hardware: hw, modRevision: 3 })] }));
    expect(actions(p.changes)).toEqual([['reimage', 'web-01']]);
    expect(p.changes[0]!.wipes).toEqual(['/dev/sda: sda (xfs on the whole disk)']);
  });

  it('data on a disk other than the install disk does not make it a reimage', () => {
    const fleet = webFleet([web(1)]);
    const hw = hardware([usedDisk('sda', 2000 * GB, { rotational: true }), disk('nvme0n1', 500 * GB)], [macOf(1)]);
    const p = plan(fleet, buildObserved({ machines: [registered(fleet, 'web-01', { hardware: hw, modRevision: 3 })] }));
    expect(p.changes).toEqual([{ action: 'provision', machine: ref(1), code: 'first-install', reason: 'first install of ubuntu-24.04@1', workflow: intentFor(1, '/dev/nvme0n1') }]);
  });
});

describe('planFleet: reimaging needs a generation bump', () => {
  const installed = (generation: number, template = 'ubuntu-24.04') => ({ template, generation, at: SEEN_AT });

  it('does nothing while the installed generation matches', () => {
    const fleet = webFleet([web(1)]);
    const observed = buildObserved({ machines: [registered(fleet, 'web-01', { hardware: usedHardware(macOf(1)), installed: installed(1), modRevision: 5 })] });
    expect(plan(fleet, observed).changes).toEqual([]);
  });

  it('does nothing when the installed generation is higher than git asks', () => {
    const fleet = webFleet([web(1)], { generation: 2 });
    const observed = buildObserved({ machines: [registered(fleet, 'web-01', { hardware: usedHardware(macOf(1)), installed: installed(3), modRevision: 5 })] });
    const p = plan(fleet, observed);
    expect(p.changes).toEqual([]);
    expect(p.notes).toEqual([]);
  });

  it('reimages when the assignment generation is above the installed one', () => {
    const fleet = webFleet([web(1)], { generation: 2 });
    const observed = buildObserved({ machines: [registered(fleet, 'web-01', { hardware: usedHardware(macOf(1)), installed: installed(1), modRevision: 5 })] });
    const p = plan(fleet, observed);
    expect(p.changes).toEqual([
      {
        action: 'reimage',
        machine: ref(1),
        code: 'generation-bumped',
        reason: 'generation 2 > installed 1 (ubuntu-24.04)',
        facts: { installed: { template: 'ubuntu-24.04', generation: 1 } },
        workflow: intentFor(1, '/dev/nvme0n1', { generation: 2, reimage: true }),
        wipes: ['/dev/nvme0n1: nvme0n1p1 (vfat "EFI")', '/dev/nvme0n1: nvme0n1p2 (ext4 "root")'],
      },
    ]);
    expect(p.summary).toEqual({ ...NO_SUMMARY, reimage: 1 });
  });

  it('names the installed system as lost when the hardware report predates the install', () => {
    const fleet = webFleet([web(1)], { generation: 2 });
    const observed = buildObserved({ machines: [registered(fleet, 'web-01', { hardware: blankHardware(macOf(1)), installed: installed(1), modRevision: 5 })] });
    const p = plan(fleet, observed);
    expect(actions(p.changes)).toEqual([['reimage', 'web-01']]);
    expect(p.changes[0]!.wipes).toEqual(['/dev/nvme0n1: the installed ubuntu-24.04']);
    expect(p.changes[0]!.workflow!.reimage).toBe(true);
  });

  it('a bump not yet applied to the record shows as an update of the assignment and a reimage', () => {
    const before = webFleet([web(1)]);
    const after = webFleet([web(1)], { generation: 2 });
    const observed = buildObserved({ machines: [registered(before, 'web-01', { hardware: usedHardware(macOf(1)), installed: installed(1), modRevision: 5 })] });
    const p = plan(after, observed);
    expect(actions(p.changes)).toEqual([
      ['update', 'web-01'],
      ['reimage', 'web-01'],
    ]);
    expect(p.changes[0]!.diff).toEqual([{ path: 'assignment', before: desired(1), after: desired(2) }]);
    expect(p.summary).toEqual({ ...NO_SUMMARY, change: 1, reimage: 1 });
  });

  it('a different template at the same generation is drift: a note, never a reimage', () => {
    const fleet = webFleet([web(1)], {}, { templates: [ubuntuTemplate(), ubuntuTemplate({ name: 'debian-12' })] });
    const observed = buildObserved({
      machines: [registered(fleet, 'web-01', { hardware: usedHardware(macOf(1)), installed: installed(1, 'debian-12'), modRevision: 5 })],
    });
    const p = plan(fleet, observed);
    expect(p.changes).toEqual([]);
    expect(p.notes).toEqual([
      {
        kind: 'drift',
        code: 'installed-template-differs',
        machine: ref(1),
        facts: { installed: { template: 'debian-12', generation: 1 }, wanted: { template: 'ubuntu-24.04', generation: 1 } },
        message: "installed debian-12@1, git asks ubuntu-24.04@1; bump the assignment's generation above 1 to reimage",
      },
    ]);
    expect(hasChanges(p)).toBe(false);
  });
});

describe('planFleet: safety', () => {
  it('protected: true blocks a reimage after a generation bump', () => {
    const fleet = webFleet([web(1, { protected: true })], { generation: 2 });
    const observed = buildObserved({
      machines: [registered(fleet, 'web-01', { hardware: usedHardware(macOf(1)), installed: { template: 'ubuntu-24.04', generation: 1 }, modRevision: 5 })],
    });
    const p = plan(fleet, observed);
    expect(p.changes).toEqual([]);
    expect(p.notes).toEqual([
      { kind: 'blocked', code: 'machine-protected', machine: ref(1), message: 'ubuntu-24.04@2 needs a reimage, but the machine is protected: true', facts: { wanted: { template: 'ubuntu-24.04', generation: 2 } } },
    ]);
  });

  it('protected: true blocks a first install over disks that hold data', () => {
    const fleet = webFleet([web(1, { protected: true })]);
    const observed = buildObserved({ machines: [registered(fleet, 'web-01', { hardware: usedHardware(macOf(1)), modRevision: 5 })] });
    const p = plan(fleet, observed);
    expect(p.changes).toEqual([]);
    expect(kinds(p.notes)).toEqual([['blocked', 'web-01']]);
  });

  it('protected: true does not block a first install on blank disks', () => {
    const fleet = webFleet([web(1, { protected: true })]);
    const observed = buildObserved({ machines: [registered(fleet, 'web-01', { hardware: blankHardware(macOf(1)), modRevision: 5 })] });
    const p = plan(fleet, observed);
    expect(actions(p.changes)).toEqual([['provision', 'web-01']]);
    expect(p.changes[0]!.workflow!.reimage).toBe(false);
    expect(p.notes).toEqual([]);
  });

  it('netboot: false blocks a machine that was never discovered too: it can never PXE boot to be discovered', () => {
    // DESIGN.md, Lifecycle: netboot: false → local boot, always; so "PXE boot the machine" cannot help.
    const fleet = webFleet([web(1, { netboot: false })]);
    const p = plan(fleet, buildObserved({ machines: [registered(fleet, 'web-01', { modRevision: 5 })] }));
    expect(p.changes).toEqual([]);
    expect(kinds(p.notes)).toEqual([['blocked', 'web-01']]);
    expect(p.notes[0]!.message).toContain('netboot: false');
  });

  it('netboot: false blocks provisioning', () => {
    const fleet = webFleet([web(1, { netboot: false })]);
    const observed = buildObserved({ machines: [registered(fleet, 'web-01', { hardware: blankHardware(macOf(1)), modRevision: 5 })] });
    const p = plan(fleet, observed);
    expect(p.changes).toEqual([]);
    expect(p.notes).toEqual([
      { kind: 'blocked', code: 'netboot-disabled', machine: ref(1), message: 'ubuntu-24.04@1 needs a network boot, but the machine has netboot: false', facts: { wanted: { template: 'ubuntu-24.04', generation: 1 } } },
    ]);
  });
});

describe('planFleet: rollout', () => {
  const blank = (fleet: Fleet, n: number, extra = {}) => registered(fleet, `web-0${n}`, { hardware: blankHardware(macOf(n)), modRevision: n + 1, ...extra });

  it('maxParallel caps the provisions of one plan; the rest are deferred', () => {
    const fleet = webFleet([web(1), web(2), web(3)], { maxParallel: 2 });
    const p = plan(fleet, buildObserved({ machines: [1, 2, 3].map((n) => blank(fleet, n)) }));
    expect(actions(p.changes)).toEqual([
      ['provision', 'web-01'],
      ['provision', 'web-02'],
    ]);
    expect(p.notes).toEqual([
      {
        kind: 'deferred',
        code: 'max-parallel-reached',
        machine: ref(3),
        message: 'ubuntu-24.04@1 deferred: rollout of "web" runs at most 2 at once',
        facts: { wanted: { template: 'ubuntu-24.04', generation: 1 }, rollout: { assignment: 'web', maxParallel: 2 } },
      },
    ]);
    expect(p.summary).toEqual({ ...NO_SUMMARY, add: 2 });
  });

  it('maxParallel counts workflows already pending or running', () => {
    const fleet = webFleet([web(1), web(2), web(3), web(4), web(5)], { maxParallel: 2 });
    const observed = buildObserved({
      machines: [...[1, 2, 3, 4].map((n) => blank(fleet, n)), blank(fleet, 5, { workflow: 'wf-web-05', phase: 'Provisioning' })],
      workflows: [wf('wf-web-05', 5, 'running')],
    });
    const p = plan(fleet, observed);
    expect(actions(p.changes)).toEqual([['provision', 'web-01']]);
    expect(kinds(p.notes)).toEqual([
      ['deferred', 'web-02'],
      ['deferred', 'web-03'],
      ['deferred', 'web-04'],
      ['in-progress', 'web-05'],
    ]);
  });

  it('workflows of another assignment do not count against maxParallel', () => {
    const fleet = buildFleet({
      machines: [web(1), web(2, { labels: { role: 'db' } })],
      templates: [ubuntuTemplate()],
      assignments: [
        { ...WEB, maxParallel: 1 },
        { name: 'db', template: 'ubuntu-24.04' },
      ],
    });
    const observed = buildObserved({
      machines: [blank(fleet, 1), registered(fleet, 'web-02', { hardware: blankHardware(macOf(2)), workflow: 'wf-db', modRevision: 3 })],
      workflows: [wf('wf-db', 2, 'running', { assignment: 'db' })],
    });
    const p = plan(fleet, observed);
    expect(actions(p.changes)).toEqual([['provision', 'web-01']]);
    expect(kinds(p.notes)).toEqual([['in-progress', 'web-02']]);
  });

  it('maxFailures: failures up to the limit are tolerated', () => {
    const fleet = webFleet([web(1), web(2)], { maxFailures: 1 });
    const observed = buildObserved({
      machines: [blank(fleet, 1, { workflow: 'wf-web-01', phase: 'Error' }), blank(fleet, 2)],
      workflows: [wf('wf-web-01', 1, 'failed', { error: 'image2disk: sha256 mismatch' })],
    });
    const p = plan(fleet, observed);
    expect(actions(p.changes)).toEqual([['provision', 'web-02']]);
    expect(kinds(p.notes)).toEqual([['failed', 'web-01']]);
  });

  it('maxFailures: one failure more stops the rollout (blocked)', () => {
    const fleet = webFleet([web(1), web(2), web(3)], { maxFailures: 1 });
    const observed = buildObserved({
      machines: [blank(fleet, 1, { workflow: 'wf-web-01', phase: 'Error' }), blank(fleet, 2, { workflow: 'wf-web-02', phase: 'Error' }), blank(fleet, 3)],
      workflows: [wf('wf-web-01', 1, 'failed'), wf('wf-web-02', 2, 'timed-out')],
    });
    const p = plan(fleet, observed);
    expect(p.changes).toEqual([]);
    expect(p.notes[2]).toEqual({
      kind: 'blocked',
      code: 'max-failures-reached',
      machine: ref(3),
      message: 'rollout of "web" stopped: 2 workflows failed at generation 1 (maxFailures 1)',
      facts: { wanted: { template: 'ubuntu-24.04', generation: 1 }, rollout: { assignment: 'web', failures: 2, maxFailures: 1 } },
    });
    expect(kinds(p.notes)).toEqual([
      ['failed', 'web-01'],
      ['failed', 'web-02'],
      ['blocked', 'web-03'],
    ]);
  });

  it('maxFailures: 0 stops at the first failure', () => {
    const fleet = webFleet([web(1), web(2)], { maxFailures: 0 });
    const observed = buildObserved({
      machines: [blank(fleet, 1, { workflow: 'wf-web-01', phase: 'Error' }), blank(fleet, 2)],
      workflows: [wf('wf-web-01', 1, 'failed')],
    });
    const p = plan(fleet, observed);
    expect(p.changes).toEqual([]);
    expect(kinds(p.notes)).toEqual([
      ['failed', 'web-01'],
      ['blocked', 'web-02'],
    ]);
  });

  it('failures at an older generation do not count', () => {
    const fleet = webFleet([web(1), web(2)], { maxFailures: 0, generation: 2 });
    const observed = buildObserved({
      machines: [blank(fleet, 1, { workflow: 'wf-web-01' }), blank(fleet, 2)],
      workflows: [wf('wf-web-01', 1, 'failed')],
    });
    expect(actions(plan(fleet, observed).changes)).toEqual([
      ['provision', 'web-01'],
      ['provision', 'web-02'],
    ]);
  });
});

describe('planFleet: workflows', () => {
  it('an active workflow is in progress: a note, no change', () => {
    const fleet = webFleet([web(1), web(2)]);
    const observed = buildObserved({
      machines: [
        registered(fleet, 'web-01', { hardware: blankHardware(macOf(1)), workflow: 'wf-web-01', modRevision: 3 }),
        registered(fleet, 'web-02', { hardware: blankHardware(macOf(2)), workflow: 'wf-web-02', modRevision: 4 }),
      ],
      workflows: [wf('wf-web-01', 1, 'running'), wf('wf-web-02', 2, 'pending')],
    });
    const p = plan(fleet, observed);
    expect(p.changes).toEqual([]);
    expect(p.notes).toEqual([
      {
        kind: 'in-progress',
        code: 'workflow-active',
        machine: ref(1),
        message: 'workflow wf-web-01 (ubuntu-24.04@1) is running',
        facts: { workflow: { id: 'wf-web-01', template: 'ubuntu-24.04', generation: 1, state: 'running' } },
      },
      {
        kind: 'in-progress',
        code: 'workflow-active',
        machine: ref(2),
        message: 'workflow wf-web-02 (ubuntu-24.04@1) is pending',
        facts: { workflow: { id: 'wf-web-02', template: 'ubuntu-24.04', generation: 1, state: 'pending' } },
      },
    ]);
  });

  it('a failed workflow at the current generation is a note, no change', () => {
    const fleet = webFleet([web(1)]);
    const observed = buildObserved({
      machines: [registered(fleet, 'web-01', { hardware: blankHardware(macOf(1)), workflow: 'wf-web-01', phase: 'Error', modRevision: 3 })],
      workflows: [wf('wf-web-01', 1, 'failed', { error: 'image2disk: sha256 mismatch' })],
    });
    const p = plan(fleet, observed);
    expect(p.changes).toEqual([]);
    expect(p.notes).toEqual([
      {
        kind: 'failed',
        code: 'workflow-failed',
        machine: ref(1),
        message: "workflow wf-web-01 failed: image2disk: sha256 mismatch; bump the assignment's generation to retry",
        facts: { workflow: { id: 'wf-web-01', template: 'ubuntu-24.04', generation: 1, state: 'failed', error: 'image2disk: sha256 mismatch' }, wanted: { template: 'ubuntu-24.04', generation: 1 } },
      },
    ]);
  });

  it('a timed-out workflow counts as failed', () => {
    const fleet = webFleet([web(1)]);
    const observed = buildObserved({
      machines: [registered(fleet, 'web-01', { hardware: blankHardware(macOf(1)), workflow: 'wf-web-01', phase: 'Error', modRevision: 3 })],
      workflows: [wf('wf-web-01', 1, 'timed-out')],
    });
    const p = plan(fleet, observed);
    expect(p.changes).toEqual([]);
    expect(p.notes).toEqual([
      {
        kind: 'failed',
        code: 'workflow-failed',
        machine: ref(1),
        message: "workflow wf-web-01 timed-out; bump the assignment's generation to retry",
        facts: { workflow: { id: 'wf-web-01', template: 'ubuntu-24.04', generation: 1, state: 'timed-out' }, wanted: { template: 'ubuntu-24.04', generation: 1 } },
      },
    ]);
  });

  it('after a generation bump a failed machine is provisioned again', () => {
    const before = webFleet([web(1)]);
    const after = webFleet([web(1)], { generation: 2 });
    const observed = buildObserved({
      machines: [registered(before, 'web-01', { hardware: blankHardware(macOf(1)), workflow: 'wf-web-01', phase: 'Error', modRevision: 3 })],
      workflows: [wf('wf-web-01', 1, 'failed')],
    });
    const p = plan(after, observed);
    expect(actions(p.changes)).toEqual([
      ['update', 'web-01'],
      ['provision', 'web-01'],
    ]);
    expect(p.changes[1]).toEqual({
      action: 'provision',
      machine: ref(1),
      code: 'first-install',
      reason: 'first install of ubuntu-24.04@2',
      workflow: intentFor(1, '/dev/nvme0n1', { generation: 2 }),
    });
    expect(p.notes).toEqual([]);
  });

  it('after a generation bump a failed machine whose disks hold data is reimaged', () => {
    const fleet = webFleet([web(1)], { generation: 2 });
    const observed = buildObserved({
      machines: [registered(fleet, 'web-01', { hardware: usedHardware(macOf(1)), workflow: 'wf-web-01', modRevision: 3 })],
      workflows: [wf('wf-web-01', 1, 'failed')],
    });
    const p = plan(fleet, observed);
    expect(actions(p.changes)).toEqual([['reimage', 'web-01']]);
    expect(p.changes[0]!.workflow!.generation).toBe(2);
  });
});

describe('planFleet: machines git does not declare', () => {
  it('retires a registered machine removed from git, without a workflow', () => {
    const old = webFleet([web(1), web(2)]);
    const fleet = webFleet([web(1)]);
    const observed = buildObserved({
      machines: [
        registered(fleet, 'web-01', { hardware: usedHardware(macOf(1)), installed: { template: 'ubuntu-24.04', generation: 1 }, modRevision: 3 }),
        registered(old, 'web-02', { hardware: usedHardware(macOf(2)), installed: { template: 'ubuntu-24.04', generation: 1 }, modRevision: 4 }),
      ],
    });
    const p = plan(fleet, observed);
    expect(p.changes).toEqual([{ action: 'retire', machine: ref(2), code: 'removed-from-git', reason: 'removed from git; its disks are left as they are (never wiped)' }]);
    expect(p.changes[0]).not.toHaveProperty('workflow');
    expect(p.changes[0]).not.toHaveProperty('wipes');
    expect(p.summary).toEqual({ ...NO_SUMMARY, retire: 1 });
  });

  it('retires a machine that was provisioning, still without a workflow', () => {
    const old = webFleet([web(1), web(2)]);
    const fleet = webFleet([web(1)]);
    const observed = buildObserved({
      machines: [registered(fleet, 'web-01', { modRevision: 3 }), registered(old, 'web-02', { workflow: 'wf-web-02', phase: 'Provisioning', modRevision: 4 })],
      workflows: [wf('wf-web-02', 2, 'running')],
    });
    const p = plan(fleet, observed);
    expect(p.changes.filter((c) => c.machine.mac === macOf(2))).toEqual([
      { action: 'retire', machine: ref(2), code: 'removed-from-git', reason: 'removed from git; its disks are left as they are (never wiped)' },
    ]);
    expect(p.changes.some((c) => c.workflow)).toBe(false);
  });

  it('leaves alone a machine already retired', () => {
    const fleet = webFleet([web(1)]);
    const observed = buildObserved({
      machines: [registered(fleet, 'web-01', { modRevision: 3 }), { mac: macOf(2), name: 'web-02', phase: 'Retired', modRevision: 4 }],
    });
    const p = plan(fleet, observed);
    expect(p.changes).toEqual([]);
    expect(kinds(p.notes)).toEqual([['waiting-discovery', 'web-01']]);
  });

  it('a discovered machine not in git is unmanaged: a note, no change', () => {
    const fleet = webFleet([web(1)]);
    const observed = buildObserved({ machines: [registered(fleet, 'web-01', { modRevision: 3 }), discovered(macOf(9), { hardware: blankHardware(macOf(9)), modRevision: 4 })] });
    const p = plan(fleet, observed);
    expect(p.changes).toEqual([]);
    expect(p.notes).toContainEqual({
      kind: 'unmanaged',
      code: 'not-in-git',
      machine: { name: 'CensusAbleQualityPatrol', mac: macOf(9), memorableName: 'CensusAbleQualityPatrol' },
      message: `seen by pxe but not in git; add a Machine with mac ${macOf(9)} to manage it`,
      facts: { seen: { source: 'pxe' } },
    });
  });
});

describe('planFleet: power', () => {
  const powered = (observedPower: 'on' | 'off' | 'unknown' | undefined, want: 'on' | 'off' = 'on') => {
    const fleet = buildFleet({ machines: [web(1, { power: want })] });
    const rec = registered(fleet, 'web-01', { modRevision: 3, ...(observedPower ? { observedPower } : {}) });
    return plan(fleet, buildObserved({ machines: [rec] }));
  };

  it('plans a power change when the observed state is known and differs', () => {
    const p = powered('off');
    expect(p.changes).toEqual([{ action: 'power', machine: ref(1), code: 'power-differs', reason: 'power is off; git asks on', power: { from: 'off', to: 'on' } }]);
    expect(p.summary).toEqual({ ...NO_SUMMARY, change: 1, power: 1 });
    expect(powered('on', 'off').changes).toEqual([{ action: 'power', machine: ref(1), code: 'power-differs', reason: 'power is on; git asks off', power: { from: 'on', to: 'off' } }]);
  });

  it('does not plan the same power change twice while the driver catches up', () => {
    const fleet = buildFleet({ machines: [web(1, { power: 'on' })] });
    const rec = registered(fleet, 'web-01', { modRevision: 3, observedPower: 'off', powerIntent: { to: 'on', at: SEEN_AT } });
    const p = plan(fleet, buildObserved({ machines: [rec] }));
    expect(p.changes).toEqual([]);
    expect(p.notes).toEqual([
      {
        kind: 'in-progress',
        code: 'power-requested',
        machine: ref(1),
        message: `power on requested at ${SEEN_AT}; the driver still reports off`,
        facts: { power: { to: 'on', observed: 'off', at: SEEN_AT } },
      },
    ]);
  });

  it('plans nothing when power is unknown, never observed, or already right', () => {
    expect(powered('unknown').changes).toEqual([]);
    expect(powered(undefined).changes).toEqual([]);
    expect(powered('on').changes).toEqual([]);
  });
});

describe('planFleet: drift in hardware', () => {
  it('notes a spec.disk or a NIC that Mage did not report', () => {
    const fleet = buildFleet({ machines: [web(1, { disk: '/dev/sdz', macs: [macOf(0x21)] })] });
    const observed = buildObserved({ machines: [registered(fleet, 'web-01', { hardware: blankHardware(macOf(1)), modRevision: 3 })] });
    const p = plan(fleet, observed);
    expect(p.changes).toEqual([]);
    expect(p.notes).toEqual([
      {
        kind: 'drift',
        code: 'disk-not-reported',
        machine: ref(1),
        message: 'spec.disk /dev/sdz is not among the disks Mage reported (/dev/sda, /dev/nvme0n1, /dev/sdb)',
        facts: { disk: '/dev/sdz', reportedDisks: ['/dev/sda', '/dev/nvme0n1', '/dev/sdb'] },
      },
      { kind: 'drift', code: 'nic-not-reported', machine: ref(1), message: `NIC ${macOf(0x21)} from spec.macs was not in the hardware report`, facts: { nic: macOf(0x21) } },
    ]);
  });
});

describe('planFleet: a disk Mage could not read', () => {
  it('counts as holding data: a reimage that says the contents are unknown, blocked when protected', () => {
    const unreadable = (mac: string) => hardware([{ name: 'vda', path: '/dev/vda', sizeBytes: 64 * GB }], [mac]);
    const fleet = webFleet([web(1), web(2, { protected: true })]);
    const observed = buildObserved({
      machines: [
        registered(fleet, 'web-01', { hardware: unreadable(macOf(1)), modRevision: 3 }),
        registered(fleet, 'web-02', { hardware: unreadable(macOf(2)), modRevision: 4 }),
      ],
    });
    const p = plan(fleet, observed);
    expect(p.changes.map((c) => [c.action, c.machine.name, c.wipes])).toEqual([['reimage', 'web-01', ['/dev/vda: contents unknown (Mage could not read the disk)']]]);
    expect(p.notes.map((n) => [n.kind, n.machine?.name])).toEqual([['blocked', 'web-02']]);
  });
});

describe('planFleet: an install disk Mage did not report', () => {
  it('blocks the install instead of writing to a disk nobody has seen (fail closed)', () => {
    const fleet = webFleet([web(1, { disk: '/dev/sdz' })]);
    const observed = buildObserved({ machines: [registered(fleet, 'web-01', { hardware: blankHardware(macOf(1)), modRevision: 3 })] });
    const p = plan(fleet, observed);
    expect(p.changes).toEqual([]);
    expect(p.notes.map((n) => n.kind)).toEqual(['drift', 'blocked']);
    expect(p.notes[1]!.message).toContain('spec.disk /dev/sdz was not reported by Mage');
  });
});

describe('planFleet: fingerprints, hash and determinism', () => {
  /** A fleet and store with one of everything. */
  function mixed() {
    const old = webFleet([web(1), web(2), web(3), web(4), web(5)]);
    const fleet = webFleet([web(1), web(2), web(3, { power: 'on' }), web(4)], { generation: 2 });
    const observed = buildObserved({
      revision: 12,
      machines: [
        registered(old, 'web-02', { hardware: usedHardware(macOf(2)), installed: { template: 'ubuntu-24.04', generation: 1 }, modRevision: 5 }),
        registered(fleet, 'web-03', { hardware: blankHardware(macOf(3)), workflow: 'wf-web-03', observedPower: 'off', modRevision: 6 }),
        registered(fleet, 'web-04', { hardware: blankHardware(macOf(4)), modRevision: 7 }),
        registered(old, 'web-05', { modRevision: 8 }),
        discovered(macOf(9), { modRevision: 9 }),
        { mac: macOf(0x0a), name: 'old-01', phase: 'Retired', modRevision: 10 },
      ],
      workflows: [wf('wf-web-03', 3, 'running', { generation: 2, modRevision: 11 })],
    });
    return { fleet, observed };
  }

  it('fingerprints every MAC in git or in the store: absent, record revision, or revision with workflow state', () => {
    const { fleet, observed } = mixed();
    const p = plan(fleet, observed);
    expect(p.fingerprints).toEqual({
      [macOf(1)]: 'absent',
      [macOf(2)]: '5',
      [macOf(3)]: '6:wf-web-03:running',
      [macOf(4)]: '7',
      [macOf(5)]: '8',
      [macOf(9)]: '9',
      [macOf(0x0a)]: '10',
    });
    expect(Object.keys(p.fingerprints)).toEqual(Object.keys(p.fingerprints).sort());
  });

  it('puts one of each rule in one plan with exact summary counts', () => {
    const { fleet, observed } = mixed();
    const p = plan(fleet, observed);
    expect(actions(p.changes)).toEqual([
      ['register', 'web-01'],
      ['update', 'web-02'],
      ['reimage', 'web-02'],
      ['power', 'web-03'],
      ['provision', 'web-04'],
      ['retire', 'web-05'],
    ]);
    expect(kinds(p.notes)).toEqual([
      ['waiting-discovery', 'web-01'],
      ['in-progress', 'web-03'],
      ['unmanaged', 'CensusAbleQualityPatrol'],
    ]);
    expect(p.summary).toEqual({ add: 2, change: 2, reimage: 1, retire: 1, power: 1 });
    expect(hasChanges(p)).toBe(true);
  });

  it('the plan is a valid plan file (schemas/plan.schema.json), before and after a JSON round trip', () => {
    const { fleet, observed } = mixed();
    const p = plan(fleet, observed);
    expect(validateAgainst('plan', p)).toEqual([]);
    expect(validateAgainst('plan', JSON.parse(JSON.stringify(p)))).toEqual([]);
  });

  it('the hash is stable for equal inputs and does not depend on createdAt', () => {
    const { fleet, observed } = mixed();
    const a = planFleet(fleet, observed, { now: new Date('2025-01-01T00:00:00Z') });
    const b = planFleet(fleet, observed, { now: new Date('2030-12-31T23:59:59Z') });
    expect(a.createdAt).not.toBe(b.createdAt);
    expect(a.hash).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(b.hash).toBe(a.hash);
    expect(planHash(a)).toBe(a.hash);
    // A plan file read back from JSON still hashes to what apply records.
    expect(planHash(JSON.parse(JSON.stringify(a)))).toBe(a.hash);
  });

  it('the hash changes with the content', () => {
    const { fleet, observed } = mixed();
    const a = plan(fleet, observed);
    expect(plan({ ...fleet, revision: 'sha256:' + '0'.repeat(64) }, observed).hash).not.toBe(a.hash);
    expect(plan(fleet, { ...observed, revision: observed.revision + 1 }).hash).not.toBe(a.hash);
  });

  it('equal inputs give deep-equal plans but for createdAt, and the inputs are not modified', () => {
    const first = mixed();
    const second = mixed();
    const snapshot = structuredClone(first);
    const a = planFleet(first.fleet, first.observed, { now: new Date(1) });
    const b = planFleet(second.fleet, second.observed, { now: new Date(2) });
    const { createdAt: _a, ...restA } = a;
    const { createdAt: _b, ...restB } = b;
    expect(restB).toEqual(restA);
    expect(JSON.stringify(restB)).toBe(JSON.stringify(restA));
    expect(first).toEqual(snapshot);
  });

  it('the fleet builder agrees with the loaded fleet', () => {
    // Guards the builders themselves: selectors resolve, MACs are normalised, names default to memorable names.
    const fleet = buildFleet({ machines: [web(1), { mac: '52-54-00-AB-CD-02', labels: { role: 'web' } }], assignments: [WEB] });
    expect(fleet.machines.map((m) => [m.name, m.mac, m.assignment])).toEqual([
      ['web-01', macOf(1), 'web'],
      ['CensusAbleQualityPark', macOf(2), 'web'],
    ]);
    expect(fleetMachine(fleet, 'web-01').memorableName).toBe('CensusAbleQualityParent');
  });
});

describe('reason codes', () => {
  it('the every-reason fixture plans every change and note code of the schema, no other', () => {
    const { fleet, observed } = everyReasonFixture();
    const p = plan(fleet, observed);
    expect([...new Set(p.changes.map((c) => c.code))].sort()).toEqual([...CHANGE_CODES].sort());
    expect([...new Set(p.notes.map((n) => n.code))].sort()).toEqual([...NOTE_CODES].sort());
    expect(validateAgainst('plan', p)).toEqual([]);
  });

  it('each code has its one action or kind, and prose written from the code and the data alone', () => {
    const { fleet, observed } = everyReasonFixture();
    // Read back from JSON, as a bot or `apply FILE` reads it: the words follow from what the file holds.
    const p = JSON.parse(JSON.stringify(plan(fleet, observed))) as ReturnType<typeof plan>;
    for (const { reason, ...c } of p.changes) {
      expect(c.action, c.code).toBe(CHANGE_ACTION[c.code]);
      expect(changeReason(c), c.code).toBe(reason);
      expect(reason, c.code).not.toMatch(/\?|undefined|null|\[object/);
    }
    for (const { message, ...n } of p.notes) {
      expect(n.kind, n.code).toBe(NOTE_KIND[n.code]);
      expect(noteMessage(n), n.code).toBe(message);
      expect(message, n.code).not.toMatch(/\?|undefined|null|\[object/);
    }
  });

  it('docs/plan-json.md lists every code once in its table, and no other', () => {
    const doc = fs.readFileSync(new URL('../docs/plan-json.md', import.meta.url), 'utf8');
    const section = doc.slice(doc.indexOf('## Reason codes'));
    const rows = [...section.matchAll(/^\| `([a-z-]+)` \| `([a-z-]+)` \|/gm)].map((m) => [m[1]!, m[2]!] as const);
    expect(rows.map(([code]) => code).sort()).toEqual([...CHANGE_CODES, ...NOTE_CODES].sort());
    // The action or kind each row names is the one the code is planned with.
    const owner: Record<string, string> = { ...CHANGE_ACTION, ...NOTE_KIND };
    for (const [code, on] of rows) expect(on, code).toBe(owner[code]);
  });
});
