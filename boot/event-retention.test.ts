import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { EVENTS, logKeys } from '../store/keys.js';
import { LmdbStore } from '../store/lmdb.js';
import { trimEvents } from './event-retention.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

describe('trimEvents', () => {
  it('keeps the newest events and deletes the oldest beyond the maximum, in chunks', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'df-events-'));
    dirs.push(dir);
    const store = LmdbStore.open(dir);
    // 2,500 events over time, in batches as writers make them.
    for (let t = 0; t < 25; t++) {
      const keys = logKeys(EVENTS, new Date(1_700_000_000_000 + t * 1000), 100);
      await store.commit({ put: keys.map((key, i) => ({ key, value: { type: 'x', n: t * 100 + i } })) });
    }
    const before = await store.read((s) => s.revision);
    expect(await trimEvents(store, 700)).toBe(1800);
    const left = await store.read((s) => s.list<{ n: number }>(EVENTS).map((e) => e.value.n));
    expect(left).toEqual(Array.from({ length: 700 }, (_, i) => 1800 + i));
    // Two commits of at most 1,000 deletions each; nothing to do the second time.
    expect(await store.read((s) => s.revision)).toBe(before + 2);
    expect(await trimEvents(store, 700)).toBe(0);
    await store.close();
  });
});
