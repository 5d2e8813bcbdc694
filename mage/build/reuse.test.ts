import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { MageInputs } from './image.js';
import { staleReason } from './reuse.js';

const INPUTS: MageInputs = {
  dragonfly: '0.1.0',
  bundle: 'b'.repeat(64),
  init: 'i'.repeat(64),
  kernel: { package: 'linux-image-6.1.0-57-amd64', version: '6.1.192-3' },
  node: { version: 'v20.20.2', sha256: 'n'.repeat(64) },
  zstdLevel: 9,
  tools: 'coreutils:dd',
  sourceDateEpoch: 0,
};

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function image(inputs: unknown, format = 2): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-reuse-'));
  dirs.push(dir);
  const info = (data: string) => ({ bytes: data.length, sha256: createHash('sha256').update(data).digest('hex') });
  fs.writeFileSync(path.join(dir, 'vmlinuz'), 'kernel');
  fs.writeFileSync(path.join(dir, 'initrd'), 'initrd');
  fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify({ format, inputs, vmlinuz: info('kernel'), initrd: info('initrd') }));
  return dir;
}

describe('staleReason: when STATE/mage is rebuilt', () => {
  it('reuses an image whose manifest has these inputs and whose files match it', () => {
    expect(staleReason(image(INPUTS), INPUTS)).toBeUndefined();
  });

  it('names what changed', () => {
    const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-reuse-'));
    dirs.push(empty);
    expect(staleReason(empty, INPUTS)).toBe('no image yet');
    expect(staleReason(image(INPUTS, 1), INPUTS)).toBe('it was built by an older dragonfly');
    expect(staleReason(image({ ...INPUTS, dragonfly: '0.0.9' }), INPUTS)).toBe('dragonfly 0.0.9 built it, this is 0.1.0');
    expect(staleReason(image({ ...INPUTS, bundle: 'c'.repeat(64) }), INPUTS)).toBe('the Mage agent changed (bundle sha256)');
    expect(staleReason(image({ ...INPUTS, kernel: { package: 'linux-image-6.1.0-56-amd64', version: '6.1.190-1' } }), INPUTS)).toBe(
      'the kernel is now linux-image-6.1.0-57-amd64 6.1.192-3 (was linux-image-6.1.0-56-amd64 6.1.190-1)',
    );
    expect(staleReason(image({ ...INPUTS, zstdLevel: 19 }), INPUTS)).toBe('the zstd level is now 9 (was 19)');
    const tampered = image(INPUTS);
    fs.writeFileSync(path.join(tampered, 'initrd'), 'initrX');
    expect(staleReason(tampered, INPUTS)).toBe('initrd does not match its manifest');
  });
});
