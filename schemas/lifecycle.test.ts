// The lifecycle table of docs/api.md, row by row, against bootFateFor: a row without a case here, or a case
// whose fate differs from what the row says, fails — so the table and the code cannot drift apart.
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { bootFateFor, isActiveWorkflow, isFailedWorkflow, phaseOf, type BootFate } from './lifecycle.js';
import type { MachineRecord, Workflow } from './types.js';

const MAC = '52:54:00:ab:cd:01';
const rec = (extra: Partial<MachineRecord> = {}): MachineRecord => ({ mac: MAC, memorableName: 'CensusAbleQualityParent', phase: 'Registered', source: 'git', ...extra });
const wf = (state: Workflow['state'], extra: Partial<Workflow> = {}): Workflow => ({
  id: 'wf-web-01-g1-abc123',
  mac: MAC,
  machine: 'web-01',
  assignment: 'web',
  template: 'tiny',
  generation: 1,
  state,
  reimage: false,
  createdAt: '2025-06-01T12:00:00.000Z',
  actions: [],
  ...extra,
});

type Case = [string, MachineRecord | undefined, Workflow | undefined];
/** Each row's first cell → the store states it stands for. */
const CASES: Record<string, Case[]> = {
  nothing: [['unknown MAC', undefined, undefined]],
  'Discovered / Registered / Assigned / Error': (['Discovered', 'Registered', 'Assigned', 'Error'] as const).flatMap((phase): Case[] => [
    [phase, rec({ phase }), undefined],
    [`${phase}, last workflow failed`, rec({ phase }), wf('failed')],
    [`${phase}, last workflow timed out`, rec({ phase }), wf('timed-out')],
  ]),
  'a pending workflow nobody has claimed': [['pending', rec({ phase: 'Provisioning', workflow: 'wf-web-01-g1-abc123' }), wf('pending')]],
  'a claimed (running) workflow': [['running', rec({ phase: 'Provisioning' }), wf('running', { claim: { at: '2025-06-01T12:01:00.000Z', ip: '10.0.0.21', secretSha256: 'ab'.repeat(32) } })]],
  'Ready (or Retired with an installed OS)': [
    ['Ready', rec({ phase: 'Ready', installed: { template: 'tiny', generation: 1 } }), wf('succeeded')],
    ['Retired with an OS', rec({ phase: 'Retired', installed: { template: 'tiny', generation: 1 } }), undefined],
  ],
  '`netboot: false`': [
    ['netboot false, Registered', rec({ spec: { mac: MAC, netboot: false } }), undefined],
    ['netboot false, even with a pending workflow', rec({ phase: 'Provisioning', spec: { mac: MAC, netboot: false } }), wf('pending')],
  ],
};

function tableRows(): { state: string; fate: BootFate['kind'] }[] {
  const doc = fs.readFileSync(new URL('../docs/api.md', import.meta.url), 'utf8');
  const table = doc.slice(doc.indexOf('| the store knows | script |')).split('\n\n')[0]!.split('\n').slice(2);
  return table.map((line) => {
    const [, state, script] = line.split(/(?<!\\)\|/).map((c) => c.trim());
    const fate = script!.startsWith('discovery') ? 'discovery' : script!.startsWith('imaging') ? 'imaging' : script!.startsWith('local boot') ? 'localboot' : undefined;
    if (!fate) throw new Error(`the row "${state}" says neither discovery, imaging nor local boot: "${script}"`);
    return { state: state!, fate };
  });
}

describe('the lifecycle table of docs/api.md', () => {
  const rows = tableRows();

  it('has a case for every row, and every case is a row', () => {
    expect(rows.map((r) => r.state).sort()).toEqual(Object.keys(CASES).sort());
  });

  for (const row of rows) {
    for (const [what, r, w] of CASES[row.state] ?? []) {
      it(`${row.state} (${what}) → ${row.fate}`, () => {
        expect(bootFateFor(r, w).kind).toBe(row.fate);
      });
    }
  }

  it('a workflow of another MAC never images this one', () => {
    expect(bootFateFor(rec({ phase: 'Assigned' }), wf('pending', { mac: '52:54:00:ab:cd:02' })).kind).toBe('discovery');
  });
});

describe('workflow states and phases', () => {
  it.each([
    ['pending', true, false],
    ['running', true, false],
    ['succeeded', false, false],
    ['failed', false, true],
    ['timed-out', false, true],
  ] as const)('%s: active %s, failed %s', (state, active, failed) => {
    expect(isActiveWorkflow(state)).toBe(active);
    expect(isFailedWorkflow(state)).toBe(failed);
  });

  const desired = { assignment: 'web', template: 'tiny', generation: 2 };
  it.each([
    ['no assignment', {}, undefined, 'Registered'],
    ['assigned, nothing installed', { desired }, undefined, 'Assigned'],
    ['a workflow running', { desired }, wf('running', { generation: 2 }), 'Provisioning'],
    ['installed at the desired generation', { desired, installed: { template: 'tiny', generation: 2 } }, wf('succeeded', { generation: 2 }), 'Ready'],
    ['installed at an older generation', { desired, installed: { template: 'tiny', generation: 1 } }, undefined, 'Assigned'],
    ['the workflow for this generation failed', { desired }, wf('failed', { generation: 2 }), 'Error'],
    ['an older generation failed', { desired }, wf('timed-out', { generation: 1 }), 'Assigned'],
  ] as const)('%s → %s', (_what, r, w, phase) => {
    expect(phaseOf(r as Pick<MachineRecord, 'installed' | 'desired'>, w)).toBe(phase);
  });
});
