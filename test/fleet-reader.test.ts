// cli/fleet-reader.ts: a large fleet is read on another thread while the main thread parses; the result must
// be exactly what reading it in place gives, and a file that cannot be read must fail the same way.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFleet } from '../bench/fleet-generator.js';
import { readEntriesConcurrently, readFleetConcurrently } from '../cli/fleet-reader.js';
import { listFleetDir, readFleetDir } from '../reconciler/sources/fleet-dir.js';
import { FleetLoader, loadFleet } from '../reconciler/load.js';
import { tempDir } from './cli-helpers.js';

let dir: string;
beforeAll(() => {
  dir = tempDir('dragonfly-fleet-reader-');
  writeFleet(path.join(dir, 'fleet'), { machines: 1500, templates: 5, assignments: 20 });
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

describe('reading a fleet on another thread', () => {
  it('gives the files readFleetDir gives, in batches as they are read, and the same loaded fleet', async () => {
    const batches: number[] = [];
    const loader = new FleetLoader();
    const files = await readFleetConcurrently(path.join(dir, 'fleet'), (batch, total) => {
      batches.push(batch.length);
      expect(total).toBe(1525);
      loader.prime(batch);
    });
    expect(batches.length).toBeGreaterThan(1); // the thread's batches, not one read in place
    expect(files).toEqual(readFleetDir(path.join(dir, 'fleet')));
    const primed = loader.load(files);
    const direct = loadFleet(files);
    expect(primed.diagnostics).toEqual(direct.diagnostics);
    expect(primed.fleet?.revision).toBe(direct.fleet?.revision);
    expect(primed.fleet?.machines.map((m) => m.name)).toEqual(direct.fleet?.machines.map((m) => m.name));
  });

  it('fails with DF_ERR_FILE_READ naming the file that could not be read', async () => {
    const entries = listFleetDir(path.join(dir, 'fleet'));
    const missing = { path: 'machines/gone.yaml', abs: path.join(dir, 'fleet', 'machines', 'gone.yaml') };
    entries.splice(1200, 0, missing);
    await expect(readEntriesConcurrently(entries, () => {})).rejects.toMatchObject({ code: 'DF_ERR_FILE_READ', message: 'cannot read machines/gone.yaml: ENOENT' });
  });
});
