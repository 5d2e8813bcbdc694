// image2disk through the P2P swarm of a real boot server (test/p2p-world.ts: the real seed, scheduler and
// routes on 127.0.0.1, an origin that counts its bytes): several Mages imaging at once read the origin once
// between them, raw images land on their targets by offset, compressed ones go through the decoder in order,
// and a swarm that fails falls back to the image URL.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MiB, startP2pWorld, type P2pWorld } from '../../test/p2p-world.js';
import { Image2DiskError, runImage2Disk, type Image2DiskResult, type Target } from './image2disk.js';

let world: P2pWorld | undefined;
afterEach(async () => {
  await world?.close();
  world = undefined;
});

/** A disk image of `size` bytes filled with 0xEE, so bytes left unwritten show. */
function disk(w: P2pWorld, name: string, size: number): string {
  const file = path.join(w.dir, name);
  fs.writeFileSync(file, Buffer.alloc(size, 0xee));
  return file;
}

function read(file: string, offset: number, length: number): Buffer {
  const fd = fs.openSync(file, 'r');
  try {
    const out = Buffer.alloc(length);
    fs.readSync(fd, out, 0, length, offset);
    return out;
  } finally {
    fs.closeSync(fd);
  }
}

const sum = (rs: Image2DiskResult[], pick: (p: NonNullable<Image2DiskResult['p2p']>) => number) => rs.reduce((n, r) => n + pick(r.p2p!), 0);

describe('image2disk over P2P', () => {
  it('4 Mages write a raw image at once (one into a partition at an offset): the origin is read once, pieces go peer to peer', async () => {
    const w = (world = await startP2pWorld(24 * MiB + 4321)); // 7 pieces of 4 MiB, the last one short
    const size = w.image.length;
    const targets: Target[] = [0, 1, 2, 3].map((i) =>
      i === 3 ? { path: disk(w, `d${i}`, size + 3 * MiB), offset: MiB, capacity: size + MiB } : { path: disk(w, `d${i}`, size + MiB), offset: 0, capacity: size + MiB },
    );
    const logs: string[][] = targets.map(() => []);
    const results = await Promise.all(
      targets.map((t, i) =>
        runImage2Disk({ url: w.origin.url, sha256: w.sha256 }, t, {
          p2p: { server: w.serverUrl, token: w.token, lingerMs: 3_000, lingerIdleMs: 1_000 },
          onLog: (l) => logs[i]!.push(l),
        }),
      ),
    );
    for (const [i, t] of targets.entries()) {
      expect(results[i]!.bytes, logs[i]!.join('\n')).toBe(size);
      expect(read(t.path, t.offset, size).equals(w.image), `target ${i}`).toBe(true);
      // Nothing outside the image was touched: the bytes around it are still the fill.
      if (t.offset > 0) expect(read(t.path, 0, t.offset).every((b) => b === 0xee)).toBe(true);
      expect(read(t.path, t.offset + size, MiB).every((b) => b === 0xee)).toBe(true);
    }
    expect(w.origin.bytesSent).toBe(size); // the seed's one read, verified against the template's sha256
    expect(sum(results, (p) => p.fromOrigin)).toBe(0);
    expect(sum(results, (p) => p.fromPeers)).toBeGreaterThan(0);
    expect(sum(results, (p) => p.fromPeers + p.fromSeed)).toBe(4 * size);
    await Promise.all(results.map((r) => r.lingering));
  }, 60_000);

  it('3 Mages decode a zstd image at once: pieces reach the decoder in order and the disks hold the raw image', async () => {
    // Half random, half repeated: ~13 MiB compressed (4 pieces), 20 MiB raw.
    const block = randomBytes(MiB);
    const raw = Buffer.concat(Array.from({ length: 20 }, (_, i) => (i % 2 === 0 ? randomBytes(MiB) : block)));
    const zst = execFileSync('zstd', ['-q', '-c', '-1'], { input: raw, maxBuffer: 64 * MiB });
    const w = (world = await startP2pWorld(zst));
    const url = w.origin.url.replace(/image\.raw$/, 'image.raw.zst');
    const targets: Target[] = [0, 1, 2].map((i) => ({ path: disk(w, `z${i}`, raw.length + MiB), offset: 0, capacity: raw.length + MiB }));
    const results = await Promise.all(targets.map((t) => runImage2Disk({ url, sha256: w.sha256, compression: 'zstd' }, t, { p2p: { server: w.serverUrl, token: w.token, lingerMs: 3_000, lingerIdleMs: 1_000 } })));
    for (const [i, t] of targets.entries()) {
      expect(results[i]!.bytes).toBe(raw.length);
      expect(read(t.path, 0, raw.length).equals(raw), `target ${i}`).toBe(true);
    }
    expect(w.origin.bytesSent).toBe(zst.length);
    expect(sum(results, (p) => p.fromPeers + p.fromSeed)).toBe(3 * zst.length);
    await Promise.all(results.map((r) => r.lingering));
  }, 60_000);

  it('a swarm that refuses the token falls back to the image URL, says so, and writes the image', async () => {
    const w = (world = await startP2pWorld(9 * MiB));
    const t: Target = { path: disk(w, 'f', 10 * MiB), offset: 0, capacity: 10 * MiB };
    const logs: string[] = [];
    const r = await runImage2Disk({ url: w.origin.url, sha256: w.sha256 }, t, { p2p: { server: w.serverUrl, token: 'ab'.repeat(32) }, onLog: (l) => logs.push(l) });
    expect(logs.join('\n')).toMatch(/the P2P swarm failed \(DF_ERR_UNAUTHORIZED: .*\); fetching http:\/\/127\.0\.0\.1:\d+\/image\.raw directly/);
    expect(r.p2p).toBeUndefined();
    expect(read(t.path, 0, w.image.length).equals(w.image)).toBe(true);
  }, 30_000);

  it('an image larger than its target is refused from the manifest, before a byte is written, with no fallback', async () => {
    const w = (world = await startP2pWorld(9 * MiB));
    const t: Target = { path: disk(w, 's', 8 * MiB), offset: 0, capacity: 8 * MiB };
    const before = w.origin.bytesSent;
    const run = runImage2Disk({ url: w.origin.url, sha256: w.sha256 }, t, { p2p: { server: w.serverUrl, token: w.token } });
    await expect(run).rejects.toThrow(Image2DiskError);
    await expect(run).rejects.toThrow(/larger than the target/);
    expect(fs.readFileSync(t.path).every((b) => b === 0xee)).toBe(true);
    expect(w.origin.bytesSent).toBe(before); // no direct download either
  }, 30_000);

  it('after the image is written the Mage keeps serving it until told to stop (the linger before the reboot)', async () => {
    const w = (world = await startP2pWorld(9 * MiB));
    const t: Target = { path: disk(w, 'l', 10 * MiB), offset: 0, capacity: 10 * MiB };
    const r = await runImage2Disk({ url: w.origin.url, sha256: w.sha256 }, t, { p2p: { server: w.serverUrl, token: w.token, lingerMs: 60_000, lingerIdleMs: 60_000 } });
    let left = false;
    void r.lingering!.then(() => (left = true));
    await new Promise((res) => setTimeout(res, 300));
    expect(left).toBe(false);
    // Still a parent in its swarm: the image's status lists it.
    const images = (await (await fetch(`${w.serverUrl}/api/v1/p2p/images`, { headers: { authorization: 'Bearer admin-token' } })).json()) as { images: { sha256: string; stats?: { peers: number } }[] };
    expect(images.images.find((i) => i.sha256 === w.sha256)?.stats?.peers).toBe(1);
    r.stopLingering!();
    await r.lingering;
    expect(left).toBe(true);
  }, 30_000);
});
