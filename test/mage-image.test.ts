// `dragonfly mage build` end to end: build Mage's vmlinuz + initrd from Debian packages, then let
// `dragonfly serve` without --mage-dir build the same image into its state directory (the same inputs must
// give the same bytes), serve it, and reuse it on its next start; then boot it in QEMU (TCG, direct kernel
// boot, two NICs on two slirp networks) against that serve and watch the machine register with its disks and
// NICs. The .debs are cached in /var/tmp/dragonfly-debs, so only the first run downloads (~100 MB).
// The builds use zstd -3 here (DRAGONFLY_MAGE_ZSTD_LEVEL): the default, -9, takes a few seconds more per
// build for a ~10% smaller initrd, and compression level changes nothing the test checks.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { memorableName } from '../schemas/memorable-name.js';
import type { MageManifest } from '../mage/build/image.js';
import { BIN, dragonfly, ROOT, tempDir } from './cli-helpers.js';
import { collect, exited, freePort, until } from './process-helpers.js';

const MAC = '52:54:00:4d:41:01'; // the boot NIC: virtio-net on slirp, reaches the server
const MAC2 = '52:54:00:4d:41:02'; // a second NIC: e1000 on an isolated slirp network (DHCP, no server)
const DEB_CACHE = process.env.DRAGONFLY_DEB_CACHE ?? '/var/tmp/dragonfly-debs';

let work: string;
let server: ChildProcess | undefined;
let serverOut: { text: () => string };
let port: number;
let state: string;
let qemu: ChildProcess | undefined;
let manifest: MageManifest;

const sha256 = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

const BUILD_ENV = { DRAGONFLY_DEB_CACHE: DEB_CACHE, DRAGONFLY_MAGE_ZSTD_LEVEL: '3', SOURCE_DATE_EPOCH: '' };

function build(out: string): { ms: number; stderr: string } {
  const t0 = Date.now();
  const r = spawnSync(process.execPath, [BIN, 'mage', 'build', '--out', out], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, ...BUILD_ENV }, timeout: 240_000 });
  if (r.status !== 0) throw new Error(`mage build failed (${r.status}):\n${r.stderr}\n${r.stdout}`);
  return { ms: Date.now() - t0, stderr: r.stderr };
}

/** One file out of the initrd, through the distribution's zstd and cpio. */
function fromInitrd(initrd: string, member: string): Buffer {
  const r = spawnSync('sh', ['-c', `zstd -dc "$1" | cpio -i --quiet --to-stdout "$2"`, 'sh', initrd, member], { maxBuffer: 256 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`cannot read ${member} from ${initrd}: ${r.stderr}`);
  return r.stdout;
}

function serial(): string {
  const f = path.join(work, 'serial.log');
  return fs.existsSync(f) ? fs.readFileSync(f, 'utf8').replace(/\r/g, '') : '';
}

beforeAll(() => {
  work = tempDir('dragonfly-mage-image-');
});

afterAll(() => {
  qemu?.kill('SIGKILL');
  server?.kill('SIGTERM');
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

describe('dragonfly mage build', () => {
  it('builds vmlinuz, initrd and manifest.json from Debian packages, reproducibly', () => {
    const out1 = path.join(work, 'mage1');
    const first = build(out1);
    expect(first.stderr).toMatch(/mage build: compressing \d+ entries/);
    manifest = JSON.parse(fs.readFileSync(path.join(out1, 'manifest.json'), 'utf8')) as MageManifest;

    // The manifest describes the files next to it.
    expect(manifest.vmlinuz).toEqual({ bytes: fs.statSync(path.join(out1, 'vmlinuz')).size, sha256: sha256(path.join(out1, 'vmlinuz')) });
    expect(manifest.initrd).toMatchObject({ bytes: fs.statSync(path.join(out1, 'initrd')).size, sha256: sha256(path.join(out1, 'initrd')), compression: 'zstd -3' });
    // The default kernel is the standard flavour (real NIC drivers), resolved from linux-image-amd64.
    expect(manifest.kernel.package).toMatch(/^linux-image-\d[\w.-]*-amd64$/);
    expect(manifest.kernel.package).not.toContain('cloud');
    expect(manifest.kernel.release).toBe(manifest.kernel.package.slice('linux-image-'.length));
    expect(manifest.node.version).toBe(process.version);
    expect(manifest.busybox.package).toBe('busybox-static');
    for (const m of ['virtio_pci', 'virtio_net', 'virtio_blk', 'virtio_scsi', 'e1000', 'e1000e', 'igb', 'ixgbe', 'i40e', 'bnxt_en', 'tg3', 'r8169', 'ahci', 'nvme', 'sd_mod', 'usb-storage']) {
      expect([...manifest.modules.loaded, ...manifest.modules.builtin], m).toContain(m);
    }
    expect(manifest.modules.files.some((f) => f.endsWith('/virtio_net.ko'))).toBe(true);
    expect(manifest.tools.map((t) => t.name)).toEqual(expect.arrayContaining(['dd', 'sfdisk', 'mkfs.vfat', 'mkfs.ext4', 'debugfs', 'mkswap', 'blkid', 'blockdev', 'partx', 'mount', 'mcopy', 'kexec', 'zstd', 'xz', 'bzip2']));
    // Every tool and library comes from a Debian package, none from this host.
    expect(manifest.tools.find((t) => t.name === 'dd')).toMatchObject({ package: 'coreutils', path: '/usr/bin/dd' });
    expect(manifest.tools.find((t) => t.name === 'kexec')).toMatchObject({ package: 'kexec-tools' });
    expect(manifest.tools.find((t) => t.name === 'mkfs.vfat')).toMatchObject({ package: 'dosfstools' });
    const packaged = new Set(manifest.packages.map((p) => p.package));
    for (const t of manifest.tools) expect(packaged, t.name).toContain(t.package);
    for (const l of manifest.libraries) expect(packaged, l.path).toContain(l.package);
    expect(manifest.libraries.map((l) => `${path.posix.basename(l.path)} ${l.package}`)).toEqual(
      expect.arrayContaining(['libc.so.6 libc6', 'libstdc++.so.6 libstdc++6', 'libext2fs.so.2 libext2fs2', 'libfdisk.so.1 libfdisk1']),
    );
    expect(manifest.inputs).toMatchObject({ kernel: { package: manifest.kernel.package }, zstdLevel: 3, bundle: manifest.bundle.sha256 });

    // What is inside: /init, the agent bundle without anything server-side, the modules list.
    const initrd = path.join(out1, 'initrd');
    expect(fromInitrd(initrd, 'init').toString()).toContain('node /usr/lib/mage/mage.mjs');
    const bundle = fromInitrd(initrd, 'usr/lib/mage/mage.mjs').toString();
    expect(bundle).toContain('/api/v1/agent/register');
    expect(bundle).not.toMatch(/lmdb|fastify|isomorphic-git|chokidar/);
    expect(fromInitrd(initrd, 'etc/mage/modules').toString().trim().split('\n')).toEqual(manifest.modules.files);

    const mb = (n: number) => `${(n / 1e6).toFixed(1)} MB`;
    console.log(
      `mage build: ${seconds(first.ms)}; ${manifest.kernel.package} ${manifest.kernel.version}; ` +
        `vmlinuz ${mb(manifest.vmlinuz.bytes)}, initrd ${mb(manifest.initrd.bytes)} (${mb(manifest.initrd.uncompressedBytes)} unpacked, node ${mb(manifest.node.bytes)}), ` +
        `${manifest.modules.files.length} modules at boot, ${manifest.tools.length} tools, ${manifest.libraries.length} libraries from ${manifest.packages.length} packages`,
    );
  }, 300_000);

  it('serve without --mage-dir builds the same bytes into STATE/mage in the background, serves them, and reuses them on its next start', async () => {
    expect(manifest, 'the build test ran first').toBeDefined();
    port = await freePort();
    state = path.join(work, 'state');
    const startServe = () => {
      server = spawn(process.execPath, [BIN, 'serve', '--state', state, '--http', `127.0.0.1:${port}`, '--tftp', 'off', '--public-url', `http://10.0.2.2:${port}`, '--log-format', 'json'], {
        cwd: ROOT,
        env: { ...process.env, ...BUILD_ENV, DRAGONFLY_STATE: '', DRAGONFLY_API_TOKEN: 'mage-image-token', CI: '1' },
      });
      serverOut = collect(server);
    };
    const api = `http://127.0.0.1:${port}`;
    const t0 = Date.now();
    startServe();
    await until('the server', async () => (await fetch(`${api}/healthz`).catch(() => undefined))?.ok === true, 20_000);
    // PXE is answered at once; while Mage is built, its files say "later" in a way iPXE waits out.
    const early = await fetch(`${api}/mage/initrd`);
    expect(early.status).toBe(503);
    expect(early.headers.get('retry-after')).toBe('5');
    expect((await fetch(`${api}/boot.ipxe`)).status).toBe(200);
    await until('Mage built by serve', () => serverOut.text().includes('serving /mage/vmlinuz and /mage/initrd'), 240_000, 500);
    const built = Date.now() - t0;
    expect(serverOut.text()).toMatch(/"msg":"building Mage into \S+\/state\/mage \(no image yet\)/);
    expect(serverOut.text()).toMatch(/"msg":"Mage build step 7\/7: compressing"/);
    expect(serverOut.text()).toMatch(/"msg":"Mage built in [\d.]+ s; serving/);

    // Same inputs, same bytes: the CLI's build and serve's.
    const mageDir = path.join(state, 'mage');
    for (const f of ['vmlinuz', 'initrd', 'manifest.json']) expect(sha256(path.join(mageDir, f)), f).toBe(sha256(path.join(work, 'mage1', f)));
    for (const f of ['vmlinuz', 'initrd'] as const) {
      const res = await fetch(`${api}/mage/${f}`);
      expect(res.status, f).toBe(200);
      const body = Buffer.from(await res.arrayBuffer());
      expect(body.length, f).toBe(manifest[f].bytes);
      expect(createHash('sha256').update(body).digest('hex'), f).toBe(manifest[f].sha256);
    }

    // The next start finds the image matching this build's inputs: no rebuild.
    server!.kill('SIGTERM');
    expect(await exited(server!)).toBe(0);
    const t1 = Date.now();
    startServe();
    await until('serve to reuse Mage', () => serverOut.text().includes('reusing it, no rebuild'), 30_000, 200);
    const reused = Date.now() - t1;
    expect(serverOut.text()).not.toContain('building Mage');
    expect((await fetch(`${api}/mage/initrd`)).status).toBe(200);
    console.log(`serve: Mage built into the state directory in ${seconds(built)} (identical to mage build); next start reused it in ${seconds(reused)}`);
  }, 300_000);

  it('boots in QEMU and registers with that dragonfly serve', async () => {
    expect(manifest, 'the build test ran first').toBeDefined();
    expect(server, 'the serve test ran first').toBeDefined();
    // The serve of the previous test, with the Mage it built into its state directory: the README's first command.
    const out = path.join(state, 'mage');
    const api = `http://127.0.0.1:${port}`;

    const disk = path.join(work, 'disk.img');
    fs.writeFileSync(disk, '');
    fs.truncateSync(disk, 2 ** 30);
    const t0 = Date.now();
    qemu = spawn(
      'qemu-system-x86_64',
      [
        '-machine', 'pc,accel=tcg', '-m', '1024', '-display', 'none', '-vga', 'none', '-monitor', 'none', '-no-reboot',
        '-serial', `file:${path.join(work, 'serial.log')}`,
        '-kernel', path.join(out, 'vmlinuz'), '-initrd', path.join(out, 'initrd'),
        '-append', `console=ttyS0 dragonfly.url=http://10.0.2.2:${port} dragonfly.mac=${MAC}`,
        // The second NIC comes first on the bus and gets a lease, but cannot reach the server.
        '-netdev', 'user,id=n1,net=10.0.3.0/24,restrict=on', '-device', `e1000,netdev=n1,mac=${MAC2}`,
        '-netdev', 'user,id=n0', '-device', `virtio-net-pci,netdev=n0,mac=${MAC}`,
        '-drive', `file=${disk},if=virtio,format=raw`,
      ],
      { stdio: ['ignore', fs.openSync(path.join(work, 'qemu.log'), 'w'), 'pipe'] },
    );
    let qemuErr = '';
    qemu.stderr!.on('data', (d: Buffer) => (qemuErr += d));

    type Machine = { mac: string; phase: string; source: string; memorableName: string; hardware?: { disks: { name: string; sizeBytes: number; transport?: string }[]; nics: { mac: string; driver?: string; link?: boolean }[] } };
    let machine: Machine | undefined;
    try {
      await until(
        'Mage to register',
        async () => {
          if (qemu!.exitCode !== null) throw new Error(`QEMU exited (${qemu!.exitCode}): ${qemuErr}`);
          const list = ((await (await fetch(`${api}/api/v1/machines`, { headers: { authorization: 'Bearer mage-image-token' } })).json()) as { items: Machine[] }).items;
          machine = list.find((m) => m.mac === MAC && m.hardware);
          return machine !== undefined;
        },
        150_000,
        500,
      );
    } catch (e) {
      throw new Error(`${(e as Error).message}\n--- serial (last 4000 chars):\n${serial().slice(-4000)}`);
    }
    const registered = Date.now() - t0;

    // /init spoke on the serial console: modules, the DHCP lease on the boot NIC, the agent's start.
    const console_ = serial();
    expect(console_).toMatch(/MAGE\[[\d.]+\]: init start: kernel /);
    expect(console_).toMatch(/MAGE\[[\d.]+\]: loaded \d+ kernel modules/);
    expect(console_).toMatch(new RegExp(`MAGE\\[[\\d.]+\\]: DHCP on eth\\d: 10\\.0\\.2\\.\\d+/24 via 10\\.0\\.2\\.2; http://10\\.0\\.2\\.2:${port} answers`));
    expect(console_).toContain(`starting Mage: server http://10.0.2.2:${port}, boot MAC ${MAC}`);

    expect(machine).toMatchObject({ phase: 'Discovered', source: 'agent', memorableName: memorableName(MAC) });
    expect(machine!.hardware!.disks).toEqual([expect.objectContaining({ name: 'vda', sizeBytes: 2 ** 30, transport: 'virtio' })]);
    expect(machine!.hardware!.nics).toEqual(
      expect.arrayContaining([expect.objectContaining({ mac: MAC, driver: 'virtio_net' }), expect.objectContaining({ mac: MAC2, driver: 'e1000' })]),
    );
    expect(machine!.hardware!.nics).toHaveLength(2);

    // The CLI sees the same machine.
    const listed = dragonfly(['machines', '--state', state, '--json']);
    expect(listed.status).toBe(0);
    expect(JSON.parse(listed.stdout)).toEqual([expect.objectContaining({ mac: MAC, phase: 'Discovered', memorableName: memorableName(MAC) })]);

    const kernelUp = /\[\s*([\d.]+)\] Run \/init/.exec(console_)?.[1];
    console.log(`mage boot: QEMU start → registered in ${seconds(registered)} (kernel ran /init at ${kernelUp ?? '?'} s guest time)`);
    qemu.kill('SIGKILL');
  }, 200_000);
});
