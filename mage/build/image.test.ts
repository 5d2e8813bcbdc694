import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { bundleMage, forbiddenInputs, packageRoot } from './image.js';

describe('the Mage bundle', () => {
  it('names server-side and native inputs as forbidden, and nothing else', () => {
    expect(
      forbiddenInputs([
        'mage/agent.ts',
        'schemas/errors.ts',
        'store/lmdb.ts',
        'dist/reconciler/plan.js',
        'boot/server.ts',
        'cli/run.ts',
        'node_modules/lmdb/dist/index.cjs',
        'node_modules/fastify/fastify.js',
        'node_modules/some-lib/lib/boot/start.js',
        'node_modules/@scure/bip39/wordlists/english.js',
      ]),
    ).toEqual(['store/lmdb.ts', 'dist/reconciler/plan.js', 'boot/server.ts', 'cli/run.ts', 'node_modules/lmdb/dist/index.cjs', 'node_modules/fastify/fastify.js']);
  });

  it('bundles the agent into one file that runs under plain node, without the server side', async () => {
    const root = packageRoot();
    const bundle = await bundleMage(root);
    expect(bundle.inputs).toEqual(expect.arrayContaining(['mage/agent.ts', 'mage/build/entry.ts', 'mage/inventory/index.ts']));
    expect(forbiddenInputs(bundle.inputs)).toEqual([]);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-bundle-'));
    try {
      fs.writeFileSync(path.join(dir, 'mage.mjs'), bundle.code);
      // An empty root: no /proc/cmdline, so no server. The bundle loads, parses its flags and says so.
      const r = spawnSync(process.execPath, [path.join(dir, 'mage.mjs'), '--root', dir, '--no-reboot'], { encoding: 'utf8', timeout: 20_000 });
      expect(r.status).toBe(1);
      expect(r.stderr).toContain('mage: error: DF_ERR_USAGE no server: pass --server URL or boot with dragonfly.url=');
      const bad = spawnSync(process.execPath, [path.join(dir, 'mage.mjs'), '--bogus'], { encoding: 'utf8', timeout: 20_000 });
      expect(bad.status).toBe(1);
      expect(bad.stderr).toContain("Unknown option '--bogus'");
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
