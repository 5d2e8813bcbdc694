// Rendering is tested against whole texts: what a reviewer reads is the contract.
import { describe, expect, it } from 'vitest';
import type { Change, Note, Plan } from '../schemas/types.js';
import { MARKDOWN_LIMIT, NO_CHANGES, renderPlanMarkdown, renderPlanText, summaryLine } from './render.js';
import { planFleet, PLAN_FORMAT_VERSION } from './plan.js';
import { everyReasonFixture, macOf } from './test-builders.js';

const MEMORABLE: Record<number, string> = {
  1: 'CensusAbleQualityParent',
  2: 'CensusAbleQualityPark',
  3: 'CensusAbleQualityParrot',
  4: 'CensusAbleQualityParty',
  5: 'CensusAbleQualityPass',
  6: 'CensusAbleQualityPatch',
  7: 'CensusAbleQualityPath',
  8: 'CensusAbleQualityPatient',
  9: 'CensusAbleQualityPatrol',
};
const machine = (n: number, name = `web-0${n}`) => ({ name, mac: macOf(n), memorableName: MEMORABLE[n]! });

const intent = (generation: number, reimage: boolean) => ({
  assignment: 'web',
  template: 'ubuntu-24.04',
  generation,
  reimage,
  disk: '/dev/nvme0n1',
  timeoutSeconds: 1800,
  actions: [{ action: 'image2disk' as const, params: { disk: '/dev/nvme0n1' } }],
});

const ONE_OF_EACH: Change[] = [
  {
    action: 'register',
    machine: machine(1),
    code: 'declared-unseen',
    reason: 'declared in git; not seen on the network yet',
    record: { name: 'web-01', spec: { mac: macOf(1) }, labels: { role: 'web' }, desired: { assignment: 'web', template: 'ubuntu-24.04', generation: 1 } },
  },
  {
    action: 'update',
    machine: machine(2),
    code: 'git-changed',
    reason: 'git changed labels, spec.disk',
    diff: [
      { path: 'labels', before: { role: 'web', rack: 'r1' }, after: { role: 'web', rack: 'r2' } },
      { path: 'spec.disk', before: null, after: '/dev/sda' },
    ],
    record: { name: 'web-02', spec: { mac: macOf(2), disk: '/dev/sda' }, labels: { role: 'web', rack: 'r2' }, desired: null },
  },
  { action: 'provision', machine: machine(3), code: 'first-install', reason: 'first install of ubuntu-24.04@1', workflow: intent(1, false) },
  {
    action: 'reimage',
    machine: machine(4),
    code: 'generation-bumped',
    reason: 'generation 2 > installed 1 (ubuntu-24.04)',
    facts: { installed: { template: 'ubuntu-24.04', generation: 1 } },
    workflow: intent(2, true),
    wipes: ['/dev/nvme0n1: nvme0n1p1 (vfat "EFI")', '/dev/nvme0n1: nvme0n1p2 (ext4 "root")'],
  },
  { action: 'retire', machine: machine(5), code: 'removed-from-git', reason: 'removed from git; its disks are left as they are (never wiped)' },
  { action: 'power', machine: machine(6), code: 'power-differs', reason: 'power is off; git asks on', power: { from: 'off', to: 'on' } },
];

const SOME_NOTES: Note[] = [
  {
    kind: 'waiting-discovery',
    code: 'awaiting-discovery',
    machine: machine(7),
    message: 'ubuntu-24.04@1 waits for discovery: PXE boot the machine so Mage can report its disks',
    facts: { wanted: { template: 'ubuntu-24.04', generation: 1 } },
  },
  {
    kind: 'blocked',
    code: 'machine-protected',
    machine: machine(8, 'db-01'),
    message: 'debian-12@2 needs a reimage, but the machine is protected: true',
    facts: { wanted: { template: 'debian-12', generation: 2 } },
  },
  {
    kind: 'unmanaged',
    code: 'not-in-git',
    machine: machine(9, MEMORABLE[9]),
    message: `seen by pxe but not in git; add a Machine with mac ${macOf(9)} to manage it`,
    facts: { seen: { source: 'pxe' } },
  },
  { kind: 'drift', code: 'nic-not-reported', machine: machine(1), message: `NIC ${macOf(0x40)} from spec.macs was not in the hardware report`, facts: { nic: macOf(0x40) } },
];

function planOf(changes: Change[], notes: Note[], summary: Plan['summary']): Plan {
  return {
    format_version: PLAN_FORMAT_VERSION,
    fleetRevision: 'sha256:' + 'ab'.repeat(32),
    storeRevision: 42,
    createdAt: '2025-06-01T12:00:00.000Z',
    fingerprints: {},
    changes,
    notes,
    summary,
    hash: 'sha256:' + 'cd'.repeat(32),
  };
}

const FULL = planOf(ONE_OF_EACH, SOME_NOTES, { add: 2, change: 2, reimage: 1, retire: 1, power: 1 });
const EMPTY = planOf([], [], { add: 0, change: 0, reimage: 0, retire: 0, power: 0 });

describe('renderPlanText', () => {
  it('prints one change of each action, the notes and the summary', () => {
    expect(renderPlanText(FULL)).toBe(
      [
        'Dragonfly will perform the following actions:',
        '',
        '  + register web-01 (52:54:00:ab:cd:01, CensusAbleQualityParent)',
        '      declared in git; not seen on the network yet',
        '  ~ update web-02 (52:54:00:ab:cd:02, CensusAbleQualityPark)',
        '      git changed labels, spec.disk',
        '      labels: {"role":"web","rack":"r1"} → {"role":"web","rack":"r2"}',
        '      spec.disk: (none) → /dev/sda',
        '  + provision web-03 (52:54:00:ab:cd:03, CensusAbleQualityParrot): install ubuntu-24.04@1 on /dev/nvme0n1',
        '      first install of ubuntu-24.04@1',
        '  ! reimage web-04 (52:54:00:ab:cd:04, CensusAbleQualityParty): REIMAGE with ubuntu-24.04@2; the disks will be wiped',
        '      generation 2 > installed 1 (ubuntu-24.04)',
        '      will be lost: /dev/nvme0n1: nvme0n1p1 (vfat "EFI")',
        '      will be lost: /dev/nvme0n1: nvme0n1p2 (ext4 "root")',
        '  - retire web-05 (52:54:00:ab:cd:05, CensusAbleQualityPass)',
        '      removed from git; its disks are left as they are (never wiped)',
        '  ~ power web-06 (52:54:00:ab:cd:06, CensusAbleQualityPatch): power off → on',
        '      power is off; git asks on',
        '',
        'Not changed by this plan:',
        '',
        '  · waiting for discovery: web-07 (52:54:00:ab:cd:07, CensusAbleQualityPath): ubuntu-24.04@1 waits for discovery: PXE boot the machine so Mage can report its disks',
        '  · blocked: db-01 (52:54:00:ab:cd:08, CensusAbleQualityPatient): debian-12@2 needs a reimage, but the machine is protected: true',
        '  · not in git: CensusAbleQualityPatrol (52:54:00:ab:cd:09): seen by pxe but not in git; add a Machine with mac 52:54:00:ab:cd:09 to manage it',
        '  · drift: web-01 (52:54:00:ab:cd:01, CensusAbleQualityParent): NIC 52:54:00:ab:cd:40 from spec.macs was not in the hardware report',
        '',
        'Plan: 2 to add, 2 to change, 1 to reimage, 1 to retire.',
        '1 machine will be reimaged: the data on their install disks will be lost.',
        '',
      ].join('\n'),
    );
  });

  it('an empty plan says exactly that nothing changes', () => {
    expect(renderPlanText(EMPTY)).toBe('No changes. The fleet matches its configuration.\n');
    expect(NO_CHANGES).toBe('No changes. The fleet matches its configuration.');
  });

  it('a plan with notes only lists them, then says nothing changes (no summary line)', () => {
    const p = planOf([], SOME_NOTES.slice(0, 1), EMPTY.summary);
    expect(renderPlanText(p)).toBe(
      [
        'Not changed by this plan:',
        '',
        '  · waiting for discovery: web-07 (52:54:00:ab:cd:07, CensusAbleQualityPath): ubuntu-24.04@1 waits for discovery: PXE boot the machine so Mage can report its disks',
        '',
        'No changes. The fleet matches its configuration.',
        '',
      ].join('\n'),
    );
  });

  it('without reimages there is no data-loss warning; several reimages are counted', () => {
    const register = planOf(ONE_OF_EACH.slice(0, 1), [], { add: 1, change: 0, reimage: 0, retire: 0, power: 0 });
    expect(renderPlanText(register)).toBe(
      [
        'Dragonfly will perform the following actions:',
        '',
        '  + register web-01 (52:54:00:ab:cd:01, CensusAbleQualityParent)',
        '      declared in git; not seen on the network yet',
        '',
        'Plan: 1 to add, 0 to change, 0 to reimage, 0 to retire.',
        '',
      ].join('\n'),
    );
    const two = planOf([ONE_OF_EACH[3]!, { ...ONE_OF_EACH[3]!, machine: machine(5) }], [], { add: 0, change: 0, reimage: 2, retire: 0, power: 0 });
    expect(renderPlanText(two).trimEnd().split('\n').at(-1)).toBe('2 machines will be reimaged: the data on their install disks will be lost.');
  });

  it('the summary line has the documented shape', () => {
    expect(summaryLine(FULL)).toBe('Plan: 2 to add, 2 to change, 1 to reimage, 1 to retire.');
    expect(summaryLine(planOf([], [], { add: 10, change: 3, reimage: 0, retire: 7, power: 1 }))).toBe('Plan: 10 to add, 3 to change, 0 to reimage, 7 to retire.');
  });

  it('colour: the reimage line is red, adds green, changes yellow; no escapes without colour', () => {
    const lines = renderPlanText(FULL, { color: true }).split('\n');
    const line = (needle: string) => lines.find((l) => l.includes(needle))!;
    expect(line('reimage web-04')).toBe(
      '\x1b[31m\x1b[1m  ! reimage web-04 (52:54:00:ab:cd:04, CensusAbleQualityParty): REIMAGE with ubuntu-24.04@2; the disks will be wiped\x1b[0m\x1b[0m',
    );
    expect(line('retire web-05').startsWith('\x1b[31m')).toBe(true);
    expect(line('register web-01').startsWith('\x1b[32m')).toBe(true);
    expect(line('update web-02').startsWith('\x1b[33m')).toBe(true);
    expect(line('will be reimaged')).toBe('\x1b[31m1 machine will be reimaged: the data on their install disks will be lost.\x1b[0m');
    expect(renderPlanText(EMPTY, { color: true })).toBe('\x1b[32mNo changes. The fleet matches its configuration.\x1b[0m\n');
    expect(renderPlanText(FULL)).not.toMatch(/\x1b\[/);
    // Colour changes nothing but the escapes.
    expect(renderPlanText(FULL, { color: true }).replace(/\x1b\[\d+m/g, '')).toBe(renderPlanText(FULL));
  });
});

describe('reason codes in words', () => {
  it('every change and note of the every-reason plan is printed with its prose, in text and in Markdown', () => {
    const { fleet, observed } = everyReasonFixture();
    const plan = planFleet(fleet, observed, { now: new Date('2025-06-01T12:00:00.000Z') });
    const text = renderPlanText(plan);
    const md = renderPlanMarkdown(plan);
    for (const c of plan.changes) {
      expect(c.reason.length, c.code).toBeGreaterThan(10);
      expect(text, c.code).toContain(`\n      ${c.reason}\n`);
      expect(md, c.code).toContain(`\n      ${c.reason}\n`);
    }
    for (const n of plan.notes) {
      expect(n.message.length, n.code).toBeGreaterThan(10);
      expect(text, n.code).toContain(`: ${n.message}\n`);
      expect(md, n.code).toContain(`: ${n.message.replaceAll('|', '\\|')}\n`);
    }
  });
});

describe('renderPlanMarkdown', () => {
  it('renders the summary, a warning for reimages, a table and collapsible details', () => {
    expect(renderPlanMarkdown(FULL)).toBe(
      [
        '### Dragonfly plan',
        '',
        '**Plan: 2 to add, 2 to change, 1 to reimage, 1 to retire.**',
        '',
        '> [!WARNING]',
        '> 1 machine(s) will be **reimaged**: the data on their install disks will be lost.',
        '',
        `Fleet revision \`sha256:${'ab'.repeat(32)}\`, store revision 42.`,
        '',
        '| action | machines |',
        '|---|---:|',
        '| `+ register` | 1 |',
        '| `~ update` | 1 |',
        '| `+ provision` | 1 |',
        '| `! reimage` | 1 |',
        '| `- retire` | 1 |',
        '| `~ power` | 1 |',
        '',
        '<details><summary>Changes (6)</summary>',
        '',
        '```diff',
        '+ register web-01 (52:54:00:ab:cd:01, CensusAbleQualityParent)',
        '      declared in git; not seen on the network yet',
        '~ update web-02 (52:54:00:ab:cd:02, CensusAbleQualityPark)',
        '      git changed labels, spec.disk',
        '      labels: {"role":"web","rack":"r1"} → {"role":"web","rack":"r2"}',
        '      spec.disk: (none) → /dev/sda',
        '+ provision web-03 (52:54:00:ab:cd:03, CensusAbleQualityParrot): install ubuntu-24.04@1 on /dev/nvme0n1',
        '      first install of ubuntu-24.04@1',
        '! reimage web-04 (52:54:00:ab:cd:04, CensusAbleQualityParty): REIMAGE with ubuntu-24.04@2; the disks will be wiped',
        '      generation 2 > installed 1 (ubuntu-24.04)',
        '      will be lost: /dev/nvme0n1: nvme0n1p1 (vfat "EFI")',
        '      will be lost: /dev/nvme0n1: nvme0n1p2 (ext4 "root")',
        '- retire web-05 (52:54:00:ab:cd:05, CensusAbleQualityPass)',
        '      removed from git; its disks are left as they are (never wiped)',
        '~ power web-06 (52:54:00:ab:cd:06, CensusAbleQualityPatch): power off → on',
        '      power is off; git asks on',
        '```',
        '',
        '</details>',
        '',
        '<details><summary>Not changed by this plan (4)</summary>',
        '',
        '- **waiting for discovery**: `web-07`: ubuntu-24.04@1 waits for discovery: PXE boot the machine so Mage can report its disks',
        '- **blocked**: `db-01`: debian-12@2 needs a reimage, but the machine is protected: true',
        '- **not in git**: `CensusAbleQualityPatrol`: seen by pxe but not in git; add a Machine with mac 52:54:00:ab:cd:09 to manage it',
        '- **drift**: `web-01`: NIC 52:54:00:ab:cd:40 from spec.macs was not in the hardware report',
        '',
        '</details>',
        '',
      ].join('\n'),
    );
  });

  it('an empty plan says so, with no table and no details', () => {
    const md = renderPlanMarkdown(EMPTY, { title: 'Plan for main' });
    expect(md).toBe(
      ['### Plan for main', '', '**No changes. The fleet matches its configuration.**', '', `Fleet revision \`sha256:${'ab'.repeat(32)}\`, store revision 42.`, ''].join('\n'),
    );
  });

  /** n provisions, as a big first rollout would plan them. */
  function bigPlan(n: number, notes: Note[] = []): Plan {
    const changes: Change[] = Array.from({ length: n }, (_, i) => ({
      action: 'provision',
      machine: { name: `node-${String(i).padStart(4, '0')}`, mac: `52:54:00:00:${((i >> 8) & 0xff).toString(16).padStart(2, '0')}:${(i & 0xff).toString(16).padStart(2, '0')}`, memorableName: `Memorable${i}` },
      code: 'first-install',
      reason: 'first install of ubuntu-24.04@1',
      workflow: intent(1, false),
    }));
    return planOf(changes, notes, { add: n, change: 0, reimage: 0, retire: 0, power: 0 });
  }

  it('a plan with 5,000 changes stays within the comment limit and says how many changes it left out', () => {
    const notes = SOME_NOTES.slice(0, 2);
    const md = renderPlanMarkdown(bigPlan(5000, notes));
    expect(MARKDOWN_LIMIT).toBe(60_000);
    expect(md.length).toBeLessThanOrEqual(60_000);
    expect(md).toContain('**Plan: 5000 to add, 0 to change, 0 to reimage, 0 to retire.**');
    expect(md).toContain('| `+ provision` | 5000 |');
    expect(md).toContain('<details><summary>Changes (');
    const shown = md.split('\n').filter((l) => l.startsWith('+ provision node-')).length;
    const omitted = /_Not shown, to fit in a comment: (\d+) change\(s\) and (\d+) note\(s\)/.exec(md);
    expect(omitted).not.toBeNull();
    expect(shown).toBeGreaterThan(0);
    expect(Number(omitted![1])).toBe(5000 - shown);
    expect(Number(omitted![2])).toBe(2);
    expect(md).toContain(`<details><summary>Changes (${shown})</summary>`);
    // The kept part is well-formed: the code fence and the details block are closed.
    expect(md.split('```').length).toBe(3);
    expect(md.split('<details>').length).toBe(md.split('</details>').length);
  });

  it('a custom limit is respected too', () => {
    const md = renderPlanMarkdown(bigPlan(200), { limit: 5_000 });
    expect(md.length).toBeLessThanOrEqual(5_000);
    expect(md).toMatch(/_Not shown, to fit in a comment: \d+ change\(s\) and 0 note\(s\)/);
  });

  it('a plan with no changes but 5,000 notes also stays within the comment limit', () => {
    // e.g. 5,000 registered machines that all wait for discovery: nothing to change, a lot to say.
    const notes: Note[] = Array.from({ length: 5000 }, (_, i) => ({
      kind: 'waiting-discovery',
      code: 'awaiting-discovery',
      machine: { name: `node-${i}`, mac: macOf(1), memorableName: `Memorable${i}` },
      message: 'ubuntu-24.04@1 waits for discovery: PXE boot the machine so Mage can report its disks',
    }));
    const md = renderPlanMarkdown(planOf([], notes, EMPTY.summary));
    expect(md).toContain('**No changes. The fleet matches its configuration.**');
    expect(md.length).toBeLessThanOrEqual(MARKDOWN_LIMIT);
  });
});
