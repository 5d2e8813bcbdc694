// The .deb cache: Debian's real apt-get download (one small package), two builds at once into one empty cache.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { aptCandidate, fetchDebs } from './debs.js';
import { fileSha256 } from './exec.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

describe('fetchDebs', () => {
  it('two builds downloading into one cache at once both get a whole, verified .deb (nothing half-written is ever seen)', async () => {
    const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-debs-'));
    dirs.push(cache);
    const mtools = await aptCandidate('mtools');
    const [a, b] = await Promise.all([fetchDebs([mtools], cache, () => {}), fetchDebs([mtools], cache, () => {})]);
    for (const got of [a.get('mtools')!, b.get('mtools')!]) {
      expect(got.version).toBe(mtools.version);
      expect(fileSha256(got.file)).toBe(got.sha256);
      if (mtools.sha256) expect(got.sha256).toBe(mtools.sha256);
    }
    // The downloads' own directories are gone; only the package is left.
    expect(fs.readdirSync(cache).filter((f) => !f.endsWith('.deb'))).toEqual([]);
  }, 60_000);
});
