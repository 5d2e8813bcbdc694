// In-memory builders for reconciler tests: a Fleet from compact sketches (written out as real fleet YAML
// and loaded by loadFleet, so tests exercise the same path as `dragonfly plan`), and an Observed state
// from plain objects with explicit store revisions. No I/O; nothing here imports a test runner.
import { stringify } from 'yaml';
import { memorableName } from '../schemas/memorable-name.js';
import type { Action, Bmc, Disk, HardwareReport, Image, MachineRecord, Workflow } from '../schemas/types.js';
import type { Fleet, FleetMachine } from './fleet.js';
import { loadFleet } from './load.js';
import type { Observed } from './observed.js';
import type { SourceFile } from './parse.js';
import { phaseOf } from '../schemas/lifecycle.js';

// ---------------------------------------------------------------------------------------------------
// Desired state

export interface MachineSketch {
  /** metadata.name; omitted: the memorable name. */
  name?: string;
  mac: string;
  labels?: Record<string, string>;
  macs?: string[];
  disk?: string;
  bmc?: Bmc;
  power?: 'on' | 'off';
  protected?: boolean;
  netboot?: boolean;
}

export interface TemplateSketch {
  name: string;
  /** null: a template without an image (actions must not use image2disk). */
  image?: Image | null;
  timeout?: string;
  actions?: Action[];
}

export interface AssignmentSketch {
  name: string;
  template: string;
  /** Exactly one of machines and selector; neither: selector {role: <assignment name>}. */
  machines?: string[];
  selector?: Record<string, string>;
  generation?: number;
  maxParallel?: number;
  maxFailures?: number;
}

export interface FleetSketch {
  machines?: MachineSketch[];
  /** Default: [ubuntuTemplate()]. */
  templates?: TemplateSketch[];
  assignments?: AssignmentSketch[];
  /** Default: the content hash of the generated files, as for a fleet directory. */
  revision?: string;
}

/** The n-th test MAC: 52:54:00:ab:cd:NN (n = 1 is the machine of DESIGN.md, CensusAbleQualityParent). */
export function macOf(n: number): string {
  return `52:54:00:ab:cd:${n.toString(16).padStart(2, '0')}`;
}

export const UBUNTU_IMAGE: Image = {
  url: 'http://images.lan/ubuntu-24.04.raw.zst',
  sha256: '5f'.repeat(32),
  compression: 'zstd',
  size: '4GiB',
};

/** The template of DESIGN.md, plus a file that carries ${server.url} (left for the boot server to fill in). */
export const UBUNTU_ACTIONS: Action[] = [
  {
    partition: {
      disk: '${disk}',
      table: 'gpt',
      partitions: [
        { name: 'efi', size: '512MiB', type: 'efi', format: 'vfat' },
        { name: 'root', size: 'rest', type: 'linux', format: 'ext4' },
      ],
    },
  },
  { image2disk: { disk: '${disk}' } },
  { writefile: { partition: 2, path: '/etc/hostname', content: '${machine.name}\n', mode: '0644' } },
  { writefile: { partition: 2, path: '/etc/dragonfly.env', content: 'SERVER=${server.url}\nMAC=${machine.mac}\n' } },
  { kexec: { partition: 2, kernel: '/boot/vmlinuz', initrd: '/boot/initrd.img', cmdline: 'root=LABEL=root ro' } },
];

export function ubuntuTemplate(overrides: Partial<TemplateSketch> = {}): TemplateSketch {
  return { name: 'ubuntu-24.04', image: UBUNTU_IMAGE, timeout: '30m', actions: UBUNTU_ACTIONS, ...overrides };
}

/** One Machine document in flow style, for tests that edit fleet files as text. */
export function machineYaml(name: string, mac: string, labels = 'role: web, rack: r1', extraSpec = ''): string {
  return `apiVersion: dragonfly.computer/v1\nkind: Machine\nmetadata: {name: ${name}, labels: {${labels}}}\nspec: {mac: "${mac}"${extraSpec}}\n`;
}

/** A Template document named `name` that partitions and images \${disk}, plus `extraActions` (flow-style lines). */
export function templateYaml(name = 'ubuntu', ...extraActions: string[]): string {
  return `apiVersion: dragonfly.computer/v1
kind: Template
metadata: {name: ${name}}
spec:
  image: {url: "http://images.lan/u.raw", sha256: "${'a'.repeat(64)}"}
  actions:
    - partition: {disk: "\${disk}", table: gpt, partitions: [{name: root, size: rest, type: linux, format: ext4}]}
    - image2disk: {disk: "\${disk}"}
${extraActions.map((a) => `    - ${a}\n`).join('')}`;
}

/**
 * A whole fleet file for one machine: the Machine (labels in flow style, `role: db` among them), a Template
 * `tiny` that only images the install disk, and the Assignment `db` that gives it to role=db.
 */
export function oneMachineFleetYaml(name: string, mac: string, labels = 'role: db'): string {
  return `${machineYaml(name, mac, labels)}---
apiVersion: dragonfly.computer/v1
kind: Template
metadata: {name: tiny}
spec:
  image: {url: "http://images.lan/tiny.raw", sha256: "${'cd'.repeat(32)}"}
  actions:
    - image2disk: {disk: \${disk}}
---
apiVersion: dragonfly.computer/v1
kind: Assignment
metadata: {name: db}
spec: {template: tiny, selector: {role: db}}
`;
}

/** One fleet file per kind, as a fleet repository would hold them. */
export function fleetFiles(sketch: FleetSketch): SourceFile[] {
  const docs = (kind: string, list: object[]) => list.map((d) => stringify({ apiVersion: 'dragonfly.computer/v1', kind, ...d })).join('---\n');
  const files: SourceFile[] = [];
  const machines = (sketch.machines ?? []).map((m) => ({
    metadata: { ...(m.name ? { name: m.name } : {}), ...(m.labels ? { labels: m.labels } : {}) },
    spec: {
      mac: m.mac,
      ...(m.macs ? { macs: m.macs } : {}),
      ...(m.disk ? { disk: m.disk } : {}),
      ...(m.bmc ? { bmc: m.bmc } : {}),
      ...(m.power ? { power: m.power } : {}),
      ...(m.protected !== undefined ? { protected: m.protected } : {}),
      ...(m.netboot !== undefined ? { netboot: m.netboot } : {}),
    },
  }));
  const templates = (sketch.templates ?? [ubuntuTemplate()]).map((t) => ({
    metadata: { name: t.name },
    spec: {
      ...(t.image === null ? {} : { image: t.image ?? UBUNTU_IMAGE }),
      ...(t.timeout ? { timeout: t.timeout } : {}),
      actions: t.actions ?? UBUNTU_ACTIONS,
    },
  }));
  const assignments = (sketch.assignments ?? []).map((a) => {
    const rollout = {
      ...(a.maxParallel !== undefined ? { maxParallel: a.maxParallel } : {}),
      ...(a.maxFailures !== undefined ? { maxFailures: a.maxFailures } : {}),
    };
    return {
      metadata: { name: a.name },
      spec: {
        template: a.template,
        ...(a.machines ? { machines: a.machines } : { selector: a.selector ?? { role: a.name } }),
        ...(a.generation !== undefined ? { generation: a.generation } : {}),
        ...(Object.keys(rollout).length > 0 ? { rollout } : {}),
      },
    };
  });
  if (machines.length > 0) files.push({ path: 'machines.yaml', text: docs('Machine', machines) });
  if (templates.length > 0) files.push({ path: 'templates.yaml', text: docs('Template', templates) });
  if (assignments.length > 0) files.push({ path: 'assignments.yaml', text: docs('Assignment', assignments) });
  return files;
}

/** Load YAML files as `dragonfly plan` would; any error diagnostic throws (a builder must build a valid fleet). */
export function fleetFromFiles(files: SourceFile[], revision?: string): Fleet {
  const result = loadFleet(files);
  const errors = result.diagnostics.filter((d) => d.severity === 'error');
  if (errors.length > 0 || !result.fleet) {
    const listing = errors.map((d) => JSON.stringify(d)).join('\n');
    throw new Error(`test fleet does not load:\n${listing}\n--- files ---\n${files.map((f) => `# ${f.path}\n${f.text}`).join('\n')}`);
  }
  // The revision is only a label for the plan; set it here rather than through loadFleet's options.
  return revision === undefined ? result.fleet : { ...result.fleet, revision };
}

/** A fleet from one YAML text (any number of documents). */
export function fleetFromYaml(text: string, revision?: string): Fleet {
  return fleetFromFiles([{ path: 'fleet.yaml', text }], revision);
}

export function buildFleet(sketch: FleetSketch): Fleet {
  return fleetFromFiles(fleetFiles(sketch), sketch.revision);
}

export function fleetMachine(fleet: Fleet, name: string): FleetMachine {
  const m = fleet.machines.find((x) => x.name === name);
  if (!m) throw new Error(`no machine ${name} in the test fleet (${fleet.machines.map((x) => x.name).join(', ')})`);
  return m;
}

// ---------------------------------------------------------------------------------------------------
// Hardware reports

export const GB = 1e9;

/** A disk as Mage reports it; a solid-state disk unless `rotational: true` is passed. */
export function disk(name: string, sizeBytes: number, extra: Partial<Disk> = {}): Disk {
  return { name, path: `/dev/${name}`, sizeBytes, rotational: false, removable: false, transport: name.startsWith('nvme') ? 'nvme' : 'sata', table: 'none', ...extra };
}

/** A disk that holds a GPT with an EFI and a root partition (what an earlier install leaves). */
export function usedDisk(name: string, sizeBytes: number, extra: Partial<Disk> = {}): Disk {
  const p = name.startsWith('nvme') ? `${name}p` : name;
  return disk(name, sizeBytes, {
    table: 'gpt',
    partitions: [
      { name: `${p}1`, sizeBytes: 512 * 2 ** 20, fstype: 'vfat', label: 'EFI' },
      { name: `${p}2`, sizeBytes: sizeBytes - 512 * 2 ** 20, fstype: 'ext4', label: 'root' },
    ],
    ...extra,
  });
}

export function hardware(disks: Disk[], macs: string[] = []): HardwareReport {
  return {
    cpu: { model: 'QEMU Virtual CPU', cores: 2, threads: 2 },
    memoryBytes: 4 * 2 ** 30,
    disks,
    nics: macs.map((mac, i) => ({ name: `eth${i}`, mac, link: true })),
  };
}

/**
 * Blank disks: a 2 TB rotational sda, a 500 GB NVMe and a USB stick. The install-disk rule
 * (schemas/install-disk.ts) picks /dev/nvme0n1: solid-state first, USB never.
 */
export function blankHardware(mac: string): HardwareReport {
  return hardware(
    [
      disk('sda', 2000 * GB, { rotational: true }),
      disk('nvme0n1', 500 * GB),
      disk('sdb', 16 * GB, { transport: 'usb', removable: true }),
    ],
    [mac],
  );
}

/** As blankHardware, but the NVMe holds a previous install (EFI + ext4 root). */
export function usedHardware(mac: string): HardwareReport {
  return hardware([disk('sda', 2000 * GB, { rotational: true }), usedDisk('nvme0n1', 500 * GB)], [mac]);
}

// ---------------------------------------------------------------------------------------------------
// Observed state

export type RecordSketch = Partial<MachineRecord> & { mac: string; phase: MachineRecord['phase']; modRevision?: number };

export type WorkflowSketch = Partial<Workflow> & {
  id: string;
  mac: string;
  state: Workflow['state'];
  assignment: string;
  template: string;
  generation: number;
  modRevision?: number;
};

export interface ObservedSketch {
  /** Default: the highest modRevision given, or 0 for an empty store. */
  revision?: number;
  machines?: RecordSketch[];
  workflows?: WorkflowSketch[];
}

export const SEEN_AT = '2025-01-01T00:00:00.000Z';

export function machineRecord(s: RecordSketch): MachineRecord {
  const { modRevision: _m, ...rest } = s;
  return {
    memorableName: memorableName(s.mac)!,
    source: s.phase === 'Discovered' ? 'pxe' : 'git',
    ...rest,
  };
}

export function workflowRecord(s: WorkflowSketch): Workflow {
  const { modRevision: _m, ...rest } = s;
  return {
    machine: memorableName(s.mac)!,
    reimage: false,
    createdAt: SEEN_AT,
    actions: [],
    ...rest,
  };
}

export function buildObserved(sketch: ObservedSketch = {}): Observed {
  const revisions = [...(sketch.machines ?? []), ...(sketch.workflows ?? [])].map((x) => x.modRevision ?? 1);
  const revision = sketch.revision ?? Math.max(0, ...revisions);
  const versioned = <T>(key: string, value: T, modRevision: number) => ({ key, value, modRevision, createRevision: modRevision });
  return {
    revision,
    machines: new Map(
      (sketch.machines ?? []).map((s) => [s.mac, versioned(`machines/${s.mac}`, machineRecord(s), s.modRevision ?? 1)]),
    ),
    workflows: new Map(
      (sketch.workflows ?? []).map((s) => [s.id, versioned(`workflows/${s.id}`, workflowRecord(s), s.modRevision ?? 1)]),
    ),
  };
}

/** A machine seen by PXE (and, with `hardware`, reported by Mage) that git does not declare yet. */
export function discovered(mac: string, extra: Partial<RecordSketch> = {}): RecordSketch {
  return { mac, phase: 'Discovered', source: 'pxe', firstSeen: SEEN_AT, lastSeen: SEEN_AT, ...extra };
}

/**
 * The record of a fleet machine exactly as apply last wrote it from git (so the planner sees no
 * update), with its phase derived from what it holds unless `extra.phase` says otherwise.
 */
export function registered(fleet: Fleet, name: string, extra: Partial<RecordSketch> = {}): RecordSketch {
  const m = fleetMachine(fleet, name);
  const a = m.assignment ? fleet.assignments.get(m.assignment) : undefined;
  const base = {
    mac: m.mac,
    name: m.name,
    memorableName: m.memorableName,
    source: 'git' as const,
    spec: structuredClone(m.spec),
    labels: { ...m.labels },
    ...(a ? { desired: { assignment: a.name, template: a.template, generation: a.generation } } : {}),
    ...extra,
  };
  return { phase: extra.phase ?? phaseOf(base, undefined), ...base };
}

// ---------------------------------------------------------------------------------------------------
// One fleet for every reason code

/**
 * A fleet and a store whose plan carries every change code and every note code of schemas/plan.schema.json
 * (machine m-N has MAC macOf(N)); the comments name the codes each machine brings.
 */
export function everyReasonFixture(): { fleet: Fleet; observed: Observed } {
  const m = (n: number, role: string, extra: Partial<MachineSketch> = {}): MachineSketch => ({ name: `m-${n}`, mac: macOf(n), labels: { role }, ...extra });
  const fleet = buildFleet({
    machines: [
      m(1, 'web'), // declared-unseen, awaiting-discovery
      m(2, 'web'), // declared-after-discovery, awaiting-discovery
      m(3, 'web'), // declared-after-retirement, awaiting-discovery
      m(4, 'web'), // git-changed, awaiting-discovery
      m(5, 'web', { power: 'on' }), // power-differs, awaiting-discovery
      m(6, 'web'), // first-install
      m(7, 'web'), // first-install-over-data
      m(8, 'db'), // generation-bumped
      m(10, 'web'), // workflow-active
      m(11, 'web', { power: 'on' }), // power-requested, awaiting-discovery
      m(12, 'batch'), // first-install
      m(13, 'batch'), // max-parallel-reached
      m(14, 'web', { netboot: false }), // netboot-disabled
      m(15, 'web', { disk: '/dev/sdz' }), // disk-not-reported, install-disk-not-reported
      m(16, 'web'), // no-install-disk
      m(17, 'web', { protected: true }), // machine-protected
      m(18, 'gpu'), // workflow-failed
      m(19, 'gpu'), // max-failures-reached
      m(20, 'web', { macs: [macOf(0x40)] }), // nic-not-reported, first-install
      m(21, 'web'), // unverified-hardware, first-install
      m(22, 'web'), // installed-template-differs
    ],
    templates: [ubuntuTemplate(), ubuntuTemplate({ name: 'debian-12' })],
    assignments: [
      { name: 'web', template: 'ubuntu-24.04' },
      { name: 'db', template: 'ubuntu-24.04', generation: 2 },
      { name: 'batch', template: 'ubuntu-24.04', maxParallel: 1 },
      { name: 'gpu', template: 'ubuntu-24.04', maxFailures: 0 },
    ],
  });
  const at = (n: number, extra: Partial<RecordSketch> = {}) => registered(fleet, `m-${n}`, { modRevision: n, ...extra });
  const blank = (n: number, extra: Partial<RecordSketch> = {}) => at(n, { hardware: blankHardware(macOf(n)), ...extra });
  const usbOnly = hardware([disk('sdb', 16 * GB, { transport: 'usb', removable: true })], [macOf(16)]);
  const observed = buildObserved({
    machines: [
      discovered(macOf(2), { modRevision: 2 }),
      { mac: macOf(3), name: 'm-3', phase: 'Retired', modRevision: 3 },
      at(4, { labels: { role: 'web', rack: 'r1' } }),
      at(5, { observedPower: 'off' }),
      blank(6),
      at(7, { hardware: usedHardware(macOf(7)) }),
      at(8, { hardware: usedHardware(macOf(8)), installed: { template: 'ubuntu-24.04', generation: 1, at: SEEN_AT } }),
      { mac: macOf(9), name: 'm-9', phase: 'Registered', source: 'git', modRevision: 9 }, // removed-from-git
      blank(10, { workflow: 'wf-m-10', phase: 'Provisioning' }),
      at(11, { observedPower: 'off', powerIntent: { to: 'on', at: SEEN_AT } }),
      blank(12),
      blank(13),
      blank(14),
      blank(15),
      at(16, { hardware: usbOnly }),
      at(17, { hardware: usedHardware(macOf(17)) }),
      blank(18, { workflow: 'wf-m-18', phase: 'Error' }),
      blank(19),
      blank(20),
      blank(21, { unverifiedHardware: { hardware: hardware([disk('sdc', 4000 * GB)], [macOf(21)]), at: SEEN_AT, ip: '10.6.6.6' } }),
      at(22, { hardware: usedHardware(macOf(22)), installed: { template: 'debian-12', generation: 1, at: SEEN_AT } }),
      discovered(macOf(23), { modRevision: 23 }), // not-in-git
    ],
    workflows: [
      { id: 'wf-m-10', mac: macOf(10), machine: 'm-10', assignment: 'web', template: 'ubuntu-24.04', generation: 1, state: 'running', modRevision: 24 },
      { id: 'wf-m-18', mac: macOf(18), machine: 'm-18', assignment: 'gpu', template: 'ubuntu-24.04', generation: 1, state: 'failed', error: 'image2disk: sha256 mismatch', modRevision: 25 },
    ],
  });
  return { fleet, observed };
}
