// bench/lifecycle: the machine lifecycle of test/lifecycle.test.ts, timed, in the same lab (test/lifecycle-lab.ts:
// a network namespace with a plain DHCP server, `dragonfly serve` with proxyDHCP + TFTP + HTTP following a fleet
// repo over smart HTTP, QEMU TCG VMs with the iPXE ROM and blank disks). Each VM runs on its own: power on →
// the PXE chain → Mage discovery → (its Machine is pushed to git as soon as it registered) → the waiting
// Mage hears of the apply (long poll) and goes on in the same boot (fast track) → imaging → Mage reboots →
// PXE → local boot → the marker OS on its disk powers it off. QEMU reboots in place; nothing waits for the
// test's hand. Phases per VM:
//   PXE → registered         QEMU start → the server has its hardware report
//   registered → started     → push, git poll (1 s), apply, the held registration answers, fast track, start
//   image written            workflow started → finished (image2disk + writefile, Ready)
//   reboot → disk boot       workflow finished → the disk's marker ran and powered the VM off
// Runs: one VM alone, then four at once (medians over the four). Baseline measured in the same run: Mage booted
// directly with -kernel/-initrd (no firmware, no PXE) until registered, so "PXE → registered" reads as a ratio
// too. Needs root and scripts/install-deps.sh's packages, like the test. Last line: JSON.
import { fileURLToPath } from 'node:url';
import { LifecycleLab, fleetFiles, mageImage, p2pShare, registered, runAll, type Timeline, type Vm } from '../test/lifecycle-lab.js';
import { median, round } from './measure.js';

const PHASES = ['pxeToRegistered', 'registeredToStarted', 'imageWritten', 'rebootToDiskBoot'] as const;
type Phase = (typeof PHASES)[number];
const LABELS: Record<Phase, string> = {
  pxeToRegistered: 'PXE → registered',
  registeredToStarted: 'registered → workflow started',
  imageWritten: 'image written',
  rebootToDiskBoot: 'reboot → disk boot',
};


export async function benchLifecycle(): Promise<void> {
  const lab = new LifecycleLab(6);
  const [direct, single, ...four] = lab.vms as [Vm, Vm, ...Vm[]];
  try {
    const mageDir = await mageImage(lab.work);
    await lab.start();
    await lab.startServe(mageDir);

    // Baseline: Mage without PXE, the same kernel and initrd on QEMU's command line.
    const baseline = lab.powerOn(direct, { reboot: 'in-place', kernel: mageDir });
    const directMs = (await registered(lab, direct, baseline)) - baseline.startedAt;
    baseline.child.kill('SIGKILL');
    await baseline.exit;
    console.log(`lifecycle: baseline, Mage booted directly (-kernel/-initrd) → registered: ${round(directMs / 1000)} s`);

    const inGit: Vm[] = [];
    let pushes = Promise.resolve();
    const addToGit = (vm: Vm) => {
      pushes = pushes.then(async () => {
        inGit.push(vm);
        lab.repo.writeAll(fleetFiles(inGit, 1));
        await lab.repo.commitAndPush(`add ${vm.name}`, { name: 'Bench', email: 'bench@example.com' });
      });
      return pushes;
    };

    const one = await runAll(lab, [single], addToGit);
    report('1 VM', one);
    const many = await runAll(lab, four, addToGit);
    report('4 VMs at once', many);

    const phases = (runs: Timeline[]) => Object.fromEntries(PHASES.map((p) => [p, round(median(runs.map((t) => durations(t)[p])) / 1000)])) as Record<Phase, number>;
    const totals = (runs: Timeline[]) => runs.map((t) => t.diskBooted! - t.poweredOn);
    const figures = {
      bench: 'lifecycle',
      baselineDirectBootToRegisteredS: round(directMs / 1000),
      pxeToRegisteredVsDirect: round(durations(one[0]!).pxeToRegistered / directMs, 2),
      oneVm: { phasesS: phases(one), totalS: round(totals(one)[0]! / 1000) },
      fourVms: {
        phasesMedianS: phases(many),
        totalMedianS: round(median(totals(many)) / 1000),
        wallS: round((Math.max(...many.map((t) => t.diskBooted!)) - Math.min(...many.map((t) => t.poweredOn))) / 1000),
        slowdownVsOne: round(median(totals(many)) / totals(one)[0]!, 2),
        // Issue #13: the VMs image from one template at once, over P2P (Mage's own words on its console).
        p2p: p2pShare(lab, many),
      },
    };
    console.log(`lifecycle: PXE → registered is ${figures.pxeToRegisteredVsDirect}× the direct boot; 4 VMs at once take ${figures.fourVms.slowdownVsOne}× one VM each (2 cores, TCG)`);
    const p = figures.fourVms.p2p;
    console.log(`lifecycle: 4 VMs imaging at once over P2P: ${p.mibFromPeers} MiB from each other (VM to VM), ${p.mibFromSeed} MiB from serve's seed, ${p.mibFromUrl} MiB from the image URL; ${p.fellBack} fell back to the URL`);
    console.log(JSON.stringify(figures));
  } catch (e) {
    console.error(`lifecycle bench failed: ${(e as Error).message}\n--- serial:\n${lab.serials().slice(-4000)}\n--- serve:\n${lab.serveLog(3000)}`);
    throw e;
  } finally {
    await lab.stop();
  }
}

function durations(t: Timeline): Record<Phase, number> {
  return {
    pxeToRegistered: t.registered! - t.poweredOn,
    registeredToStarted: t.started! - t.registered!,
    imageWritten: t.finished! - t.started!,
    rebootToDiskBoot: t.diskBooted! - t.finished!,
  };
}

function report(what: string, runs: Timeline[]): void {
  const rows = runs.map(durations);
  const med = Object.fromEntries(PHASES.map((p) => [p, median(rows.map((r) => r[p]))])) as Record<Phase, number>;
  const total = PHASES.reduce((s, p) => s + med[p], 0);
  console.log(`lifecycle, ${what}${runs.length > 1 ? ' (medians per phase; their sum)' : ''}: total ${round(total / 1000)} s`);
  for (const p of PHASES) console.log(`  ${LABELS[p].padEnd(30)} ${String(round(med[p] / 1000)).padStart(6)} s  ${String(Math.round((100 * med[p]) / total)).padStart(3)}%`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await benchLifecycle();
  process.exit(0);
}
