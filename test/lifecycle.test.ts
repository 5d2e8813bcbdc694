// Issue #6's acceptance, one system test with no stand-ins (test/lifecycle-lab.ts): the real Mage boot image
// (`dragonfly mage build`), a real installed-OS image (a raw disk whose MBR is
// test/fixtures/lifecycle/marker-mbr.asm and whose first partition is ext4), a fleet in git served over
// smart HTTP, and in a network namespace: a plain DHCP server on "another host", `dragonfly serve --repo`
// with its proxyDHCP, TFTP and HTTP, and a QEMU VM (TCG, iPXE NIC ROM, blank virtio disk) that is started
// again by the test every time it reboots (-no-reboot makes a reboot end the QEMU process; power by the
// test's hand until a power driver exists). Every PXE boot gets its address from the plain server and its boot
// file from our proxy; the first runs the whole legacy chain, as a BIOS PXE ROM would (--chainload-ipxe): the
// ROM's DHCP → TFTP undionly.kpxe from serve → undionly's DHCP → HTTP script. Later boots come within the
// proxy's 2-minute chain window, so the ROM's iPXE gets the script directly.
//   1. unknown MAC → discovery: Mage boots and reports; the machine is Discovered with its memorable name;
//   2. a commit adds the Machine and an Assignment; the controller applies it; the waiting Mage, long-polling,
//      is told to reboot at once;
//   3. imaging: Mage asks for the imaging script itself, sees it boots this very Mage, and runs the workflow
//      in the discovery boot (fast track): it writes the image and /etc/hostname, the machine is Ready, and
//      Mage reboots;
//   4. the VM PXE boots again → local boot: iPXE exits, SeaBIOS boots the disk (-boot order=nc), the marker
//      MBR prints on COM1 and powers off;
//   5. the CLI shows Ready with template@generation and the apply with its commit author; then a generation
//      bump reimages the VM: powered on, iPXE gets the imaging script with the workflow token, Mage images;
//      then 4 again.
// The Mage image is built by serve itself into its state directory (~15 s with zstd -3, while the VM is already
// PXE booting), or taken from DRAGONFLY_LIFECYCLE_MAGE_DIR.
// Needs root (namespaces, taps, port 67) and scripts/install-deps.sh's packages.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { memorableName } from '../schemas/memorable-name.js';
import { BIN, fileOnDisk, fleetFiles, LAB_TOKEN, LifecycleLab, MARKER, ROOT, seconds, type Boot } from './lifecycle-lab.js';
import { FIRST_LEASE, SERVER_IP } from './pxe-network.js';
import { collect, until } from './process-helpers.js';

const GRACE = { name: 'Grace Hopper', email: 'grace@example.com' };

const lab = new LifecycleLab(1);
const vm = lab.vms[0]!;
let watchChild: ChildProcess | undefined;

afterAll(async () => {
  watchChild?.kill('SIGKILL');
  await lab.stop();
}, 60_000);

describe('the machine lifecycle in QEMU: discovery → git → imaging → local boot → reimage', () => {
  it('PXE boots an unknown VM into Mage, images it from git, boots its disk, and reimages it on a generation bump', async () => {
    const times: [string, number][] = [];
    let mark = Date.now();
    const phase = (name: string) => {
      const now = Date.now();
      times.push([name, now - mark]);
      console.log(`lifecycle: ${name}: ${seconds(now - mark)}`);
      mark = now;
    };
    let watch: { text: () => string } | undefined;
    try {
      // 0. The Mage image; the network, the OS image and its server, the fleet repo; `dragonfly serve` and `watch`.
      // No --mage-dir: serve builds Mage into its state directory in the background (issue #12's acceptance:
      // the README's first command alone takes a machine from PXE to Discovered); the VM below is powered on
      // as soon as serve answers, while that build may still be running, and iPXE retries until Mage is there.
      const first = await lab.start();
      await lab.startServe(process.env.DRAGONFLY_LIFECYCLE_MAGE_DIR, { chainloadIpxe: true });
      // A template alone changes no machine: the commit is seen (and valid), with nothing to apply.
      await until('the first commit seen', async () => (await lab.status())?.seen?.revision === first, 30_000, 250);
      expect((await lab.status())!.seen!.valid).toBe(true);
      watchChild = spawn(process.execPath, [BIN, 'watch', '--server', lab.api, '--since', '0'], { cwd: ROOT, env: { ...process.env, NO_COLOR: '1', DRAGONFLY_READ_TOKEN: LAB_TOKEN } });
      watch = collect(watchChild);
      phase('setup (network, OS image, git, serve)');

      // 1. Unknown MAC → discovery: the whole PXE chain, then Mage boots and reports its hardware; it waits for git.
      let boot = lab.powerOn(vm);
      let seen: Awaited<ReturnType<typeof lab.machines>>[number] | undefined;
      await until(
        'Mage to report the hardware',
        async () => {
          if (boot.child.exitCode !== null) throw new Error(`QEMU exited (${boot.child.exitCode})`);
          seen = (await lab.machines()).find((m) => m.mac === vm.mac && m.hardware);
          return seen !== undefined;
        },
        210_000,
        500,
      );
      expect(seen).toMatchObject({ phase: 'Discovered', memorableName: memorableName(vm.mac) });
      expect(seen!.hardware!.disks).toEqual([expect.objectContaining({ name: 'vda', sizeBytes: 2 ** 30 })]);
      expect(seen!.hardware!.nics).toEqual([expect.objectContaining({ mac: vm.mac, driver: 'e1000' })]);
      await until('Mage to wait', () => /registered as \S+ \(\S+\): wait/.test(lab.serial(boot.n)), 30_000, 250);
      expectPxeChain(boot, { tftp: true });
      phase('1 discovery: power on → Discovered with hardware');

      // 2–3. Imaging. `imaged(generation, fastTrack)`: with fastTrack the running discovery Mage is told to reboot,
      // asks for the imaging script itself (the same GET /boot/:mac its iPXE would make), sees that it boots this
      // very Mage and runs the workflow in this boot (mage/fast-track.ts); without, the test powers the VM on and
      // iPXE gets the imaging script. Either way Mage writes the image and /etc/hostname, reports success and
      // reboots (which ends QEMU).
      const imaged = async (generation: number, scripts: number, fastTrack: boolean) => {
        // Progress on the way: the workflow's image2disk action as the server has it, sampled while Mage runs
        // (watch prints action state changes; the percentages in between live in the workflow record).
        const midway: string[] = [];
        let sampling = true;
        const sampler = (async () => {
          while (sampling) {
            const wfs = await lab.workflows().catch(() => []);
            const a = wfs.find((w) => w.generation === generation)?.actions[0];
            if (a?.state === 'running' && a.percent !== undefined && a.percent > 0 && a.percent < 100) {
              const seen = `${a.percent.toFixed(0)}% (${a.message ?? ''})`;
              if (midway.at(-1) !== seen) midway.push(seen);
            }
            await new Promise((r) => setTimeout(r, 150));
          }
        })();
        if (!fastTrack) boot = lab.powerOn(vm);
        try {
          await lab.ended(boot, `Mage to image the disk (generation ${generation}) and reboot`, 180_000);
        } finally {
          sampling = false;
          await sampler;
        }
        console.log(`lifecycle: image2disk progress seen midway (generation ${generation}): ${midway.join(', ')}`);
        expect(midway.length).toBeGreaterThan(0);
        const console_ = lab.serial(boot.n);
        if (fastTrack) {
          expect(console_).toMatch(/registered as lab-01 \(\S+\): reboot/);
          expect(console_).toMatch(/fast track: wf-\S+ in this boot, no reboot/);
        } else {
          expectPxeChain(boot);
          expect(console_).toMatch(/dragonfly\.workflow=wf-\S+ dragonfly\.token=[0-9a-f]{64}/);
        }
        expect(console_).toMatch(/: run wf-/);
        // The image came through serve's P2P swarm (issue #13), here from its seed alone: one VM has no peers.
        expect(console_).toMatch(/image2disk: over P2P: [\d.]+ MiB from peers, [\d.]+ MiB from the server's seed, 0\.0 MiB from the image URL/);
        expect(console_).not.toMatch(/the P2P swarm failed/);
        expect(console_).toMatch(/registered as lab-01 \(\S+\): localboot/);
        // One imaging script either way: iPXE's, or the one the fast track asked for.
        expect(await lab.metric('dragonfly_boot_scripts_total{fate="imaging"}')).toBe(scripts + 1);
        const m = (await lab.machines()).find((r) => r.mac === vm.mac)!;
        expect(m).toMatchObject({ name: vm.name, phase: 'Ready' });
        expect(fileOnDisk(vm.disk, '/etc/hostname').toString()).toBe(`${vm.name}\n`);
        expect(fileOnDisk(vm.disk, '/opt/payload').equals(lab.image.payload)).toBe(true);
        // The disk starts with the image: the marker MBR's boot code and the partition table.
        const head = Buffer.alloc(512);
        const fd = fs.openSync(vm.disk, 'r');
        fs.readSync(fd, head, 0, 512, 0);
        fs.closeSync(fd);
        expect(head.subarray(0, 440).equals(lab.image.mbr)).toBe(true);
        expect(head.readUInt16LE(510)).toBe(0xaa55);
      };

      // 2. The machine goes into git; the controller applies it; the waiting (long-polling) Mage hears of it.
      const imagingScripts = await lab.metric('dragonfly_boot_scripts_total{fate="imaging"}');
      lab.repo.writeAll(fleetFiles(lab.vms, 1));
      const second = await lab.repo.commitAndPush(`add ${vm.name}`, GRACE);
      await until('the commit applied', async () => (await lab.status())?.applied?.revision === second, 30_000, 250);
      expect((await lab.status())!.applied!.author).toBe(`${GRACE.name} <${GRACE.email}>`);
      phase('2 git: push → applied');

      // 3. Imaging in the discovery boot (fast track), then Mage reboots.
      await imaged(1, imagingScripts, true);
      phase('3 imaging: fast track in the discovery boot → Mage writes image + hostname → Ready → reboot');

      // 4. Local boot: iPXE exits, SeaBIOS boots the disk, the marker prints and powers off.
      const localBoot = async () => {
        const scripts = await lab.metric('dragonfly_boot_scripts_total{fate="localboot"}');
        boot = lab.powerOn(vm);
        await lab.ended(boot, 'the disk to boot and power off', 90_000);
        expect(await lab.metric('dragonfly_boot_scripts_total{fate="localboot"}')).toBe(scripts + 1);
        expectPxeChain(boot);
        const console_ = lab.serial(boot.n);
        expect(console_).toContain(MARKER);
        expect(console_).not.toContain('MAGE[');
      };
      await localBoot();
      phase('4 local boot: power on → iPXE exit → disk MBR marker → power off');

      // 5. What the CLI says: Ready with template@generation; the apply with its commit author.
      const rows = JSON.parse((await lab.cli(['machines', '--state', lab.state, '--json'])).stdout) as unknown[];
      expect(rows).toEqual([expect.objectContaining({ mac: vm.mac, name: vm.name, phase: 'Ready', installed: 'marker-os@1', template: 'marker-os@1', memorableName: memorableName(vm.mac) })]);
      const history = await lab.cli(['history', '--state', lab.state]);
      expect(history.status).toBe(0);
      expect(history.stdout).toContain(`for ${GRACE.name} <${GRACE.email}>`);
      const watched = watch.text();
      expect(watched).toMatch(new RegExp(`${memorableName(vm.mac)} machine\\.discovered`));
      expect(watched).toMatch(/lab-01 workflow\.running: marker-os@1 started/);
      expect(watched).toMatch(/lab-01 workflow\.action 0%: image2disk \(action 1 of 2\) started/);
      expect(watched).toMatch(/lab-01 workflow\.action 100%: image2disk \(action 1 of 2\) done/);
      expect(watched).toMatch(/lab-01 workflow\.action.*writefile/);
      expect(watched).toMatch(/marker-os@1 installed/);
      // The first boot went through serve's TFTP (undionly.kpxe); every boot leased from the plain DHCP server.
      expect(await lab.metric('dragonfly_tftp_transfers_total')).toBeGreaterThanOrEqual(1);
      expect(lab.net.events.some((e) => e.src === 'router' && e.rx === 'REQUEST' && e.mac === vm.mac)).toBe(true);
      phase('5 CLI: machines, history, watch');

      // 6. A generation bump reimages the VM: powered on, iPXE gets the imaging script; then its disk boots again.
      const reimagingScripts = await lab.metric('dragonfly_boot_scripts_total{fate="imaging"}');
      lab.repo.writeAll(fleetFiles(lab.vms, 2));
      const third = await lab.repo.commitAndPush('reimage lab: generation 2', GRACE);
      await until('the bump applied', async () => (await lab.status())?.applied?.revision === third, 30_000, 250);
      await until('the reimage workflow', async () => (await lab.machines()).find((m) => m.mac === vm.mac)?.phase !== 'Ready', 10_000, 250);
      phase('6 git: generation bump applied');
      await imaged(2, reimagingScripts, false);
      phase('6 reimaging: power on → Mage → Ready → reboot');
      await localBoot();
      phase('6 local boot after the reimage');
      const after = JSON.parse((await lab.cli(['machines', '--state', lab.state, '--json'])).stdout) as unknown[];
      expect(after).toEqual([expect.objectContaining({ name: vm.name, phase: 'Ready', installed: 'marker-os@2' })]);
      await until('the watch to show generation 2', () => /marker-os@2 installed/.test(watch!.text()), 10_000);

      const total = times.reduce((s, [, ms]) => s + ms, 0);
      console.log(`lifecycle: total ${seconds(total)}; ${times.map(([n, ms]) => `${n.split(':')[0]} ${seconds(ms)} (${Math.round((100 * ms) / total)}%)`).join(', ')}`);
    } catch (e) {
      const tail = (text: string, n: number) => text.slice(-n);
      throw new Error(
        `${(e as Error).message}\n--- serial (last 6000 chars):\n${tail(lab.serials(), 6000)}` +
          `\n--- serve (last 3000):\n${lab.serveLog(3000)}\n--- watch (last 2000):\n${tail(watch?.text() ?? '', 2000)}`,
        { cause: e },
      );
    }
  }, 330_000);
});

/**
 * The boot's console shows the chain: the NIC ROM's iPXE got its address from the plain DHCP server (the first
 * lease) and its boot file from our proxy; with `tftp`, undionly.kpxe over TFTP from serve first, which then
 * fetched the script over HTTP.
 */
function expectPxeChain(boot: Boot, opts: { tftp?: boolean } = {}): void {
  const console_ = lab.serial(boot.n);
  if (opts.tftp) {
    expect(console_).toMatch(new RegExp(`tftp://${SERVER_IP.replaceAll('.', '\\.')}/undionly\\.kpxe\\.* ok`));
    expect(console_.split('Open Source Network Boot Firmware').length - 1).toBe(2);
  }
  expect(console_).toContain(`Filename: http://${SERVER_IP}:8080/boot.ipxe`);
  expect(console_).toMatch(new RegExp(`${FIRST_LEASE.replaceAll('.', '\\.')}`));
}
