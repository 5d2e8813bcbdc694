// GET /boot/:mac answers known machines from memory (boot-answers.ts): these tests change the records
// under a server that has already answered, and check that the very next answer follows — for writes of
// this process at once, for another process's writes after the store's poll, and after a compaction.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { buildServer } from './server.js';
import type { MachineRecord, Workflow } from '../schemas/types.js';
import { machineKey, workflowKey } from '../store/keys.js';
import { LmdbStore } from '../store/lmdb.js';
import { BootAnswers } from './boot-answers.js';

const MAC = '52:54:00:ab:cd:01';
const SECRET = Buffer.alloc(32, 7);

let dir: string;
let store: LmdbStore;
let app: FastifyInstance;

const machine = (over: Partial<MachineRecord> = {}): MachineRecord => ({ mac: MAC, memorableName: 'quiet-otter', phase: 'Discovered', source: 'pxe', ...over });
const workflow = (over: Partial<Workflow> = {}): Workflow =>
  ({ id: 'wf-1', mac: MAC, template: 'tiny', generation: 1, state: 'pending', createdAt: new Date(0).toISOString(), actions: [], ...over }) as Workflow;
const boot = async () => (await app.inject({ url: `/boot/${MAC.replaceAll(':', '-')}?platform=efi` })).body;

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-answers-'));
  store = LmdbStore.open(dir, { pollMs: 20 });
  await store.commit({ put: [{ key: machineKey(MAC), value: machine() }] });
  app = await buildServer({ store, secret: SECRET, serverUrl: 'http://10.0.0.1:8080' });
  await app.ready();
});
afterEach(async () => {
  await app.close();
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('GET /boot/:mac from memory', () => {
  it('follows this process\'s writes at once: workflow created, claimed, finished', async () => {
    expect(await boot()).toContain('discovery for');
    expect(await boot()).toContain('discovery for'); // now held in memory

    await store.commit({ put: [{ key: workflowKey('wf-1'), value: workflow() }, { key: machineKey(MAC), value: machine({ phase: 'Provisioning', workflow: 'wf-1' }) }] });
    const imaging = await boot();
    expect(imaging).toContain('dragonfly.workflow=wf-1');
    expect(imaging).toContain('dragonfly.token=');

    // Only the workflow changes (the claim): the machine's held answer must still go.
    await store.commit({ put: [{ key: workflowKey('wf-1'), value: workflow({ state: 'running', claim: { secretSha256: 'ab'.repeat(32), ip: '10.0.0.9', at: new Date(0).toISOString() } } as Partial<Workflow>) }] });
    const claimed = await boot();
    expect(claimed).toContain('dragonfly.workflow=wf-1');
    expect(claimed).not.toContain('dragonfly.token=');

    await store.commit({ put: [{ key: machineKey(MAC), value: machine({ phase: 'Ready', workflow: 'wf-1', installed: { template: 'tiny', generation: 1 } }) }, { key: workflowKey('wf-1'), value: workflow({ state: 'succeeded' }) }] });
    expect(await boot()).toMatch(/sanboot|exit/);
  });

  it('follows another process\'s writes after the store\'s poll', async () => {
    expect(await boot()).toContain('discovery for');
    const other = LmdbStore.open(dir, { pollMs: 20 });
    try {
      await other.commit({ put: [{ key: machineKey(MAC), value: machine({ phase: 'Ready', installed: { template: 'tiny', generation: 1 } }) }] });
    } finally {
      await other.close();
    }
    const deadline = Date.now() + 5000;
    let answer = await boot();
    while (answer.includes('discovery for') && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
      answer = await boot();
    }
    expect(answer).not.toContain('discovery for');
  });

  it('a machine deleted from the store is unknown again (discovery, recorded anew)', async () => {
    expect(await boot()).toContain('discovery for');
    await store.commit({ put: [{ key: machineKey(MAC), value: machine({ phase: 'Ready', installed: { template: 'tiny', generation: 1 } }) }] });
    expect(await boot()).not.toContain('discovery for');
    await store.commit({ delete: [machineKey(MAC)] });
    expect(await boot()).toContain('discovery for');
  });
});

describe('BootAnswers', () => {
  it('holds nothing until it follows the store, and nothing after close', async () => {
    const answers = new BootAnswers(store);
    expect(answers.set(MAC, machine(), undefined)).toBeUndefined();
    await answers.start();
    expect(answers.set(MAC, machine(), undefined)).toBeDefined();
    expect(answers.get(MAC)).toBeDefined();
    answers.close();
    expect(answers.get(MAC)).toBeUndefined();
    expect(answers.set(MAC, machine(), undefined)).toBeUndefined();
  });

  it('is bounded: beyond its size the oldest entry goes', async () => {
    const answers = new BootAnswers(store, 3);
    await answers.start();
    const macs = ['52:54:00:00:00:01', '52:54:00:00:00:02', '52:54:00:00:00:03', '52:54:00:00:00:04'];
    for (const mac of macs) answers.set(mac, machine({ mac }), undefined);
    expect(answers.size).toBe(3);
    expect(answers.get(macs[0]!)).toBeUndefined();
    expect(answers.get(macs[3]!)).toBeDefined();
    answers.close();
  });

  it('renders a platform once, and at most four platforms per machine', async () => {
    const answers = new BootAnswers(store);
    await answers.start();
    const entry = answers.set(MAC, machine(), undefined)!;
    let renders = 0;
    const render = () => `script ${++renders}`;
    expect(answers.script(entry, 'efi', render)).toBe('script 1');
    expect(answers.script(entry, 'efi', render)).toBe('script 1');
    for (const p of ['a', 'b', 'c', 'd', 'e']) answers.script(entry, p, render);
    expect(entry.scripts.size).toBe(4);
    answers.close();
  });

  it('empties itself when its watch falls behind the store\'s change window, and follows on', async () => {
    const small = path.join(dir, 'small');
    const s = LmdbStore.open(small, { retainRevisions: 1, pollMs: 10_000 });
    try {
      const answers = new BootAnswers(s);
      await answers.start();
      // Another process writes 300 commits (compaction runs every 256) while this one does not poll.
      const other = LmdbStore.open(small, { retainRevisions: 1, pollMs: 10_000 });
      answers.set(MAC, machine(), undefined);
      for (let i = 0; i < 300; i++) await other.commit({ put: [{ key: 'x/filler', value: i }] });
      await other.close();
      // The next commit of this process makes it look: its changes are gone, so it starts again.
      await s.commit({ put: [{ key: 'x/filler', value: -1 }] });
      expect(answers.get(MAC)).toBeUndefined();
      await new Promise((r) => setTimeout(r, 50));
      expect(answers.set(MAC, machine(), undefined)).toBeDefined(); // following again
      await s.commit({ put: [{ key: machineKey(MAC), value: machine({ phase: 'Ready' }) }] });
      expect(answers.get(MAC)).toBeUndefined();
      answers.close();
    } finally {
      await s.close();
    }
  });
});
