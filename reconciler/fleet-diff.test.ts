import { describe, expect, it } from 'vitest';
import type { Change, Note, Plan } from '../schemas/types.js';
import { branchPlan, diffFields, diffResources, reviewHasChanges, reviewOfPlan, summarize, type BranchReview } from './fleet-diff.js';
import { planFleet } from './plan.js';
import { renderBranchMarkdown, renderBranchText, renderFleetDiffText } from './render.js';
import { blankHardware, buildObserved, fleetFromYaml, machineYaml, registered, templateYaml, usedHardware } from './test-builders.js';

const machine = machineYaml;

const TEMPLATE = templateYaml();

const assignment = (generation = 1) =>
  `apiVersion: dragonfly.computer/v1\nkind: Assignment\nmetadata: {name: web}\nspec: {template: ubuntu, selector: {role: web}, generation: ${generation}}\n`;

describe('diffFields', () => {
  it('names nested fields with dotted paths and quotes keys that are not identifiers', () => {
    expect(diffFields({ metadata: { labels: { rack: 'r1', 'example.com/tier': 'a' } } }, { metadata: { labels: { rack: 'r2', 'example.com/tier': 'b' } } })).toEqual([
      { path: 'metadata.labels.rack', before: 'r1', after: 'r2' },
      { path: 'metadata.labels["example.com/tier"]', before: 'a', after: 'b' },
    ]);
  });

  it('reports an added or removed field with one side only', () => {
    expect(diffFields({ spec: { mac: 'x' } }, { spec: { mac: 'x', disk: '/dev/sda' } })).toEqual([{ path: 'spec.disk', after: '/dev/sda' }]);
    expect(diffFields({ spec: { protected: true } }, { spec: {} })).toEqual([{ path: 'spec.protected', before: true }]);
  });

  it('an item inserted in a list is one change, not a shift of every later item', () => {
    const a = [{ partition: 1 }, { image2disk: 1 }, { kexec: 1 }];
    const b = [{ partition: 1 }, { writefile: 1 }, { image2disk: 1 }, { kexec: 1 }];
    expect(diffFields({ actions: a }, { actions: b })).toEqual([{ path: 'actions[1]', after: { writefile: 1 } }]);
    expect(diffFields({ actions: b }, { actions: a })).toEqual([{ path: 'actions[1]', before: { writefile: 1 } }]);
    // Same length: item by item, down to the field.
    expect(diffFields({ actions: [{ w: { content: 'a' } }] }, { actions: [{ w: { content: 'b' } }] })).toEqual([{ path: 'actions[0].w.content', before: 'a', after: 'b' }]);
  });
});

describe('diffResources', () => {
  const base = [
    { path: 'machines/a.yaml', text: machine('web-01', '52:54:00:00:00:01') + '---\n' + machine('web-02', '52:54:00:00:00:02') },
    { path: 'templates/u.yaml', text: TEMPLATE },
    { path: 'assignments/web.yaml', text: assignment(1) },
    { path: 'old.yaml', text: machine('old-01', '52:54:00:00:00:09') },
  ];

  it('lists resources added, removed and changed (with fields), and ignores comments and formatting', () => {
    const head = [
      // web-01 relabelled; web-02 reformatted with a comment and an upper-case MAC: no change.
      {
        path: 'machines/a.yaml',
        text:
          machine('web-01', '52:54:00:00:00:01', 'role: web, rack: r2') +
          '---\n# the second web server\napiVersion: dragonfly.computer/v1\nkind: Machine\nmetadata:\n  labels: {rack: r1, role: web}\n  name: web-02\nspec:\n  mac: "52:54:00:00:00:02"\n',
      },
      { path: 'machines/b.yaml', text: machine('web-03', '52-54-00-00-00-03') },
      { path: 'templates/u.yaml', text: TEMPLATE },
      { path: 'assignments/web.yaml', text: assignment(2) },
    ];
    const d = diffResources(base, head);
    expect(d.changes).toEqual([
      { kind: 'Machine', name: 'old-01', change: 'removed', file: 'old.yaml' },
      { kind: 'Machine', name: 'web-01', change: 'changed', file: 'machines/a.yaml', fields: [{ path: 'metadata.labels.rack', before: 'r1', after: 'r2' }] },
      { kind: 'Machine', name: 'web-03', change: 'added', file: 'machines/b.yaml' },
      { kind: 'Assignment', name: 'web', change: 'changed', file: 'assignments/web.yaml', fields: [{ path: 'spec.generation', before: 1, after: 2 }] },
    ]);
    expect(d.summary).toEqual({ added: 1, changed: 2, removed: 1, moved: 0 });
    expect(d.problems).toEqual([]);
    const text = renderFleetDiffText(d, 'Comparing a → b');
    expect(text).toContain('  ~ Machine web-01 changed (machines/a.yaml)\n      metadata.labels.rack: r1 → r2\n');
    expect(text).toContain('  - Machine old-01 removed (old.yaml)');
    expect(text).toContain('Resources: 1 added, 2 changed, 1 removed.');
  });

  it('a machine is identified by its MAC: a rename is a change of metadata.name; a move to another file is a move', () => {
    const head = [
      { path: 'machines/a.yaml', text: machine('web-1', '52:54:00:00:00:01') },
      { path: 'machines/c.yaml', text: machine('web-02', '52:54:00:00:00:02') },
      { path: 'templates/u.yaml', text: TEMPLATE },
      { path: 'assignments/web.yaml', text: assignment(1) },
      { path: 'old.yaml', text: machine('old-01', '52:54:00:00:00:09') },
    ];
    expect(diffResources(base, head).changes).toEqual([
      { kind: 'Machine', name: 'web-02', change: 'moved', file: 'machines/c.yaml', previousFile: 'machines/a.yaml' },
      { kind: 'Machine', name: 'web-1', change: 'changed', file: 'machines/a.yaml', fields: [{ path: 'metadata.name', before: 'web-01', after: 'web-1' }] },
    ]);
  });

  it('reads only files whose text differs, and reports YAML errors of changed files as problems', () => {
    const head = [...base.slice(1), { path: 'machines/a.yaml', text: 'apiVersion: [\n' }];
    const d = diffResources(base, head);
    expect(d.changes.map((c) => `${c.change} ${c.name}`)).toEqual(['removed web-01', 'removed web-02']);
    expect(d.problems).toHaveLength(1);
    expect(d.problems[0]).toMatchObject({ side: 'head', file: 'machines/a.yaml', code: 'DF_ERR_YAML_SYNTAX' });
  });
});

describe('branchPlan', () => {
  const MAC = (n: number) => `52:54:00:00:00:0${n}`;
  const fleetOf = (machines: string[], generation = 1) => fleetFromYaml([TEMPLATE, assignment(generation), ...machines].join('---\n'), `rev-${generation}-${machines.length}`);
  const NOW = new Date('2025-01-01T00:00:00Z');

  it('keeps the head changes that the base does not make identically, and lists what the head withdraws', () => {
    const baseFleet = fleetOf([machine('web-01', MAC(1)), machine('web-02', MAC(2)), machine('web-05', MAC(5))]);
    // The store knows web-01 and web-02 as the base declares them; web-05 is new on the base too.
    const observed = buildObserved({ machines: [registered(baseFleet, 'web-01'), registered(baseFleet, 'web-02')] });
    const headFleet = fleetOf([machine('web-01', MAC(1), 'role: web, rack: r2'), machine('web-02', MAC(2)), machine('web-03', MAC(3))]);
    const base = planFleet(baseFleet, observed, { now: NOW });
    const head = planFleet(headFleet, observed, { now: NOW });
    const bp = branchPlan(base, head);
    expect(bp.plan.changes.map((c) => `${c.action} ${c.machine.name}`)).toEqual(['update web-01', 'register web-03']);
    expect(bp.withdrawn.map((c) => `${c.action} ${c.machine.name}`)).toEqual(['register web-05']);
    expect(bp.unchanged).toBe(0);
    expect(bp.plan.summary).toEqual({ add: 1, change: 1, reimage: 0, retire: 0, power: 0 });
    expect(bp.plan.hash).toMatch(/^sha256:/);
    // Notes the base has too (web-01 and web-02 wait for discovery on both) are left out.
    expect(bp.plan.notes.map((n) => n.machine?.name)).toEqual(['web-03']);
  });

  it('a change the base makes identically is left out; a different version of it is kept', () => {
    const baseFleet = fleetOf([machine('web-01', MAC(1)), machine('web-05', MAC(5))]);
    const observed = buildObserved({ machines: [registered(baseFleet, 'web-01')] });
    const same = planFleet(fleetOf([machine('web-01', MAC(1)), machine('web-05', MAC(5))]), observed, { now: NOW });
    const relabelled = planFleet(fleetOf([machine('web-01', MAC(1)), machine('web-05', MAC(5), 'role: web, rack: r7')]), observed, { now: NOW });
    const base = planFleet(baseFleet, observed, { now: NOW });
    expect(branchPlan(base, same)).toMatchObject({ withdrawn: [], unchanged: 1 });
    expect(branchPlan(base, same).plan.changes).toEqual([]);
    const kept = branchPlan(base, relabelled);
    expect(kept.plan.changes.map((c) => `${c.action} ${c.machine.name} ${c.record?.labels?.rack}`)).toEqual(['register web-05 r7']);
    expect(kept.withdrawn).toEqual([]);
  });

  it('without a base plan every change of the head is the branch’s', () => {
    const head = planFleet(fleetOf([machine('web-01', MAC(1))]), buildObserved(), { now: NOW });
    expect(branchPlan(undefined, head).plan.changes).toEqual(head.changes);
  });

  it('a generation bump on the branch is a reimage, rendered with what it wipes', () => {
    const baseFleet = fleetOf([machine('web-01', MAC(1)), machine('web-02', MAC(2))], 1);
    const observed = buildObserved({
      machines: [
        registered(baseFleet, 'web-01', { phase: 'Ready', hardware: usedHardware(MAC(1)), installed: { template: 'ubuntu', generation: 1, at: '2025-01-01T00:00:00Z' } }),
        registered(baseFleet, 'web-02', { hardware: blankHardware(MAC(2)) }),
      ],
    });
    const headFleet = fleetOf([machine('web-01', MAC(1)), machine('web-02', MAC(2))], 2);
    const base = planFleet(baseFleet, observed, { now: NOW });
    const head = planFleet(headFleet, observed, { now: NOW });
    const bp = branchPlan(base, head);
    expect(bp.plan.changes.map((c) => `${c.action} ${c.machine.name}`).sort()).toEqual(['provision web-02', 'reimage web-01', 'update web-01', 'update web-02']);
    // The base provisions web-02 at generation 1; the head at 2: a different change, kept, not withdrawn.
    expect(bp.withdrawn).toEqual([]);
    const review: BranchReview = {
      format_version: '1.0',
      base: { ref: 'origin/main', commit: 'a'.repeat(40), valid: true },
      head: { ref: 'HEAD', commit: 'b'.repeat(40), valid: true },
      path: '',
      ...reviewOfPlan(bp, observed.revision),
      resources: diffResources([{ path: 'a.yaml', text: assignment(1) }], [{ path: 'a.yaml', text: assignment(2) }]),
      diagnostics: [],
    };
    expect(reviewHasChanges(review)).toBe(true);
    const md = renderBranchMarkdown(review);
    expect(md).toMatch(/^### Dragonfly plan for `aaaaaaa\.\.bbbbbbb`\n/);
    expect(md).toContain('**Plan: 1 to add, 2 to change, 1 to reimage, 0 to retire.**');
    expect(md).toContain('#### Reimaged: what will be lost');
    expect(md).toMatch(/- `web-01` \(52:54:00:00:00:01\): `\/dev\/nvme0n1: nvme0n1p1 \(vfat "EFI"\)`, `\/dev\/nvme0n1: nvme0n1p2 \(ext4 "root"\)`/);
    expect(md).toContain('| `! reimage` | `web-01` |');
    expect(md).toContain('| Assignment `web` | changed | `a.yaml` | `spec.generation`: `1` → `2` |');
    const text = renderBranchText(review);
    expect(text).toContain('Comparing base aaaaaaa (origin/main) → head bbbbbbb (HEAD), against store revision');
    expect(text).toContain('! reimage web-01');
  });

  it('a review with nothing of the branch’s says so', () => {
    const empty: Plan['summary'] = summarize([]);
    const review: BranchReview = {
      format_version: '1.0',
      base: { ref: 'main', commit: 'a'.repeat(40), valid: true },
      head: { ref: 'HEAD', commit: 'b'.repeat(40), valid: true },
      path: 'fleet',
      storeRevision: 3,
      summary: empty,
      changes: [] as Change[],
      notes: [] as Note[],
      withdrawn: [],
      unchanged: 2,
      resources: diffResources([], []),
      diagnostics: [],
    };
    expect(reviewHasChanges(review)).toBe(false);
    const md = renderBranchMarkdown(review);
    expect(md).toContain('**No changes: this branch does not change what apply would do.**');
    expect(md).toContain('2 changes that the base would make as well are left out.');
    expect(md).toContain('Fleet folder `fleet/`');
    expect(md).toContain('No Machine, Template or Assignment changes.');
  });
});
