// Issue #13's QEMU acceptance: three VMs imaged from one template at once, on one network where they reach
// each other, with the image passed VM to VM. The lab of test/lifecycle.test.ts (test/lifecycle-lab.ts: a
// network namespace with a plain DHCP server, `dragonfly serve --repo` with proxyDHCP, TFTP and HTTP, QEMU
// TCG VMs with the iPXE ROM and blank disks), here with three VMs rebooting in place: each PXE boots into
// Mage, registers, is pushed to git, goes on in the same boot (fast track), writes the image through serve's
// P2P swarm, reboots and boots its disk, whose marker OS powers it off. Each Mage says on its console where
// its image's bytes came from; the VMs must have taken some from each other, none from the image URL, and
// the image server must have sent the image once (the seed's read).
// Needs root (namespaces, taps, port 67) and scripts/install-deps.sh's packages, as the lifecycle test.
import fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { fileOnDisk, fleetFiles, LifecycleLab, p2pShare, runAll, seconds, type Vm } from './lifecycle-lab.js';
import { until } from './process-helpers.js';

// Tag 'b': this lab's namespaces and management addresses stay apart from the lifecycle test's, which may run
// at the same time.
const lab = new LifecycleLab(3, { tag: 'b' });

afterAll(async () => {
  await lab.stop();
}, 60_000);

describe('three VMs imaged at once through the P2P swarm of serve', () => {
  it('each VM boots its disk with the image, and the VMs passed pieces to each other', async () => {
    const started = Date.now();
    try {
      const first = await lab.start();
      await lab.startServe(process.env.DRAGONFLY_LIFECYCLE_MAGE_DIR);
      await until('the first commit seen', async () => (await lab.status())?.seen?.revision === first, 30_000, 250);
      const inGit: Vm[] = [];
      let pushes = Promise.resolve();
      // Each VM goes into git as soon as it registered; the pushes are serialized.
      const addToGit = (vm: Vm) =>
        (pushes = pushes.then(async () => {
          inGit.push(vm);
          lab.repo.writeAll(fleetFiles(inGit, 1));
          await lab.repo.commitAndPush(`add ${vm.name}`, { name: 'Grace Hopper', email: 'grace@example.com' });
        }));
      const runs = await runAll(lab, lab.vms, addToGit);
      const share = p2pShare(lab, runs);
      const imageSize = fs.statSync(lab.image.file).size;
      console.log(
        `lifecycle-swarm: 3 VMs in ${seconds(Date.now() - started)}: ${share.mibFromPeers} MiB VM to VM, ${share.mibFromSeed} MiB from serve's seed, ` +
          `${share.mibFromUrl} MiB from the image URL; image server sent ${lab.imageBytesSent()} bytes for a ${imageSize}-byte image`,
      );
      expect(share).toMatchObject({ reported: 3, fellBack: 0, mibFromUrl: 0 });
      expect(share.mibFromPeers).toBeGreaterThan(0);
      expect(lab.imageBytesSent()).toBe(imageSize);
      for (const vm of lab.vms) {
        expect(fileOnDisk(vm.disk, '/etc/hostname').toString(), vm.name).toBe(`${vm.name}\n`);
        expect(fileOnDisk(vm.disk, '/opt/payload').equals(lab.image.payload), vm.name).toBe(true);
      }
      const machines = await lab.machines();
      for (const vm of lab.vms) expect(machines.find((m) => m.mac === vm.mac)).toMatchObject({ name: vm.name, phase: 'Ready' });
    } catch (e) {
      throw new Error(`${(e as Error).message}\n--- serial (last 6000 chars):\n${lab.serials().slice(-6000)}\n--- serve (last 3000):\n${lab.serveLog(3000)}`, { cause: e });
    }
  }, 600_000);
});
