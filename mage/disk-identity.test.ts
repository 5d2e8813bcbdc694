// Mage's check that the install disk is the disk the workflow was planned for, on a copy of the
// server-nvme-sata fixture tree (sysfs with serials and WWNs; dev/ holds disk images standing in for the
// devices). The same workflow that writes a GPT to the planned disk must leave every other disk untouched.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeEach, describe, expect, test } from 'vitest';
import { DragonflyError } from '../schemas/errors.js';
import type { ActionReport, Workflow } from '../schemas/types.js';
import { identityDifferences, verifyInstallDisk, type PlannedIdentity } from './disk-identity.js';
import { collectInventory } from './inventory/index.js';
import { runWorkflow } from './workflow-runner.js';

const FIXTURE = fileURLToPath(new URL('./fixtures/server-nvme-sata/', import.meta.url));
const SDA_SYSFS = 'sys/devices/pci0000:00/0000:00:08.1/0000:03:00.2/ata1/host0/target0:0:0/0:0:0:0/block/sda';
const MiB = 2 ** 20;

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'mage-disk-identity-'));
afterAll(() => fs.rmSync(scratch, { recursive: true, force: true }));

let root: string;
let sda: string;
let n = 0;
beforeEach(() => {
  // A fresh copy per test. sda shrinks to 64 MiB, in sysfs and its image alike, so the image can be hashed whole.
  root = path.join(scratch, `machine-${++n}`);
  fs.cpSync(FIXTURE, root, { recursive: true, verbatimSymlinks: true });
  fs.writeFileSync(path.join(root, SDA_SYSFS, 'size'), `${(64 * MiB) / 512}\n`);
  sda = path.join(root, 'dev/sda');
  fs.truncateSync(sda, 64 * MiB);
});

/** The identity the server plans from: the disk's entry in this machine's hardware report. */
async function reportedIdentity(name: string): Promise<PlannedIdentity> {
  const disk = (await collectInventory(root)).disks.find((d) => d.name === name)!;
  return { sizeBytes: disk.sizeBytes, ...(disk.serial ? { serial: disk.serial } : {}), ...(disk.wwn ? { wwn: disk.wwn } : {}) };
}

const sha256 = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

/** Partition the disk: the first bytes a reimage writes (a protective MBR and a GPT). */
function workflowFor(disk: string, diskIdentity?: PlannedIdentity): Pick<Workflow, 'actions' | 'disk' | 'diskIdentity'> {
  return {
    disk,
    ...(diskIdentity ? { diskIdentity } : {}),
    actions: [{ action: 'partition', state: 'pending', params: { disk, table: 'gpt', partitions: [{ name: 'root', size: 'rest', type: 'linux', format: 'none' }] } }],
  };
}

async function run(wf: Pick<Workflow, 'actions' | 'disk' | 'diskIdentity'>, disk = wf.disk!, sysRoot: string | undefined = root) {
  const reports: ActionReport[] = [];
  const log: string[] = [];
  const outcome = await runWorkflow(wf, { disk, ...(sysRoot !== undefined ? { sysRoot } : {}), dryRunKexec: true, report: async (_i, r) => void reports.push(r), log: (l) => log.push(l) });
  return { outcome, reports, log };
}

const hasGpt = (file: string) => fs.readFileSync(file).subarray(512, 520).toString('latin1') === 'EFI PART';

describe('runWorkflow with a planned disk identity', () => {
  test('the planned disk (same size, serial and WWN as reported) is written', async () => {
    const identity = await reportedIdentity('sda');
    expect(identity).toEqual({ sizeBytes: 64 * MiB, serial: 'PHYF912300AB960CGN', wwn: 'naa.55cd2e414f1a2b3c' });
    const { outcome, reports, log } = await run(workflowFor(sda, identity));
    expect(outcome).toEqual({ ok: true });
    expect([reports[0]?.state, reports.at(-1)?.state]).toEqual(['running', 'succeeded']);
    expect(hasGpt(sda)).toBe(true);
    expect(log).toContain(`install disk ${sda} is the planned disk: ${64 * MiB} bytes, serial PHYF912300AB960CGN, wwn naa.55cd2e414f1a2b3c`);
  });

  test.each([
    ['serial', { serial: 'S1' }, 'its serial is PHYF912300AB960CGN but the workflow was planned for serial S1'],
    ['wwn', { wwn: 'naa.5000c500b1a2c3d4' }, 'its wwn is naa.55cd2e414f1a2b3c but the workflow was planned for wwn naa.5000c500b1a2c3d4'],
    ['size', { sizeBytes: 960197124096 }, 'its size is 67108864 bytes (64 MiB) but the workflow was planned for 960197124096 bytes (894.25 GiB)'],
  ])('a %s mismatch fails the workflow before a byte is written, naming the difference', async (_what, change, difference) => {
    const before = sha256(sda);
    const { outcome, reports } = await run(workflowFor(sda, { ...(await reportedIdentity('sda')), ...change }));
    expect(outcome).toEqual({ ok: false, code: 'DF_ERR_DISK_MISMATCH', error: `refusing to write ${sda}: ${difference} (a different disk, or a forged hardware report)` });
    expect(reports).toEqual([]);
    expect(sha256(sda)).toBe(before);
    expect(hasGpt(sda)).toBe(false);
  });

  test('a forged report that passed the 4 TB data disk off as the SSD: every difference is named, the data disk is untouched', async () => {
    const sdb = path.join(root, 'dev/sdb');
    const before = sha256(sdb);
    const { outcome } = await run(workflowFor(sdb, await reportedIdentity('sda')));
    expect(outcome.ok).toBe(false);
    const error = outcome.ok ? '' : outcome.error;
    expect(error).toContain('its size is 4000787030016 bytes (3.64 TiB) but the workflow was planned for 67108864 bytes (64 MiB)');
    expect(error).toContain('its serial is ZC1A2B3C but the workflow was planned for serial PHYF912300AB960CGN');
    expect(error).toContain('its wwn is naa.5000c500b1a2c3d4 but the workflow was planned for wwn naa.55cd2e414f1a2b3c');
    expect(sha256(sdb)).toBe(before);
  });

  test('a /dev/disk/by-id link is followed to the device it names', async () => {
    const link = path.join(root, 'dev/disk/by-id/wwn-0x55cd2e414f1a2b3c');
    fs.mkdirSync(path.dirname(link), { recursive: true });
    fs.symlinkSync('../../sda', link);
    const identity = await reportedIdentity('sda');
    expect((await run(workflowFor(link, identity))).outcome).toEqual({ ok: true });
    expect(hasGpt(sda)).toBe(true);
    const refused = await run(workflowFor(link, { ...identity, serial: 'S1' }));
    expect(refused.outcome).toMatchObject({ ok: false, error: expect.stringContaining(`refusing to write ${link} (${sda}): its serial is`) });
  });

  test("the operator's --disk override is not checked, and the log says so", async () => {
    const image = path.join(scratch, `override-${n}.img`);
    fs.writeFileSync(image, '');
    fs.truncateSync(image, 64 * MiB);
    const wf = { ...workflowFor('/dev/sda', { sizeBytes: 1, serial: 'nothing like it' }) };
    const { outcome, log } = await run(wf, image);
    expect(outcome).toEqual({ ok: true });
    expect(hasGpt(image)).toBe(true);
    expect(log).toContain(`install disk ${image}: chosen by the operator instead of the workflow's /dev/sda; its identity is not checked`);
  });

  test("the workflow's own disk must be a device of this machine: a disk image elsewhere is refused, untouched", async () => {
    const image = path.join(scratch, `elsewhere-${n}.img`);
    fs.writeFileSync(image, Buffer.alloc(64 * MiB));
    const identity = await reportedIdentity('sda');
    for (const sysRoot of [root, undefined]) {
      const { outcome } = await run(workflowFor(image, identity), image, sysRoot);
      expect(outcome).toMatchObject({ ok: false, code: 'DF_ERR_DISK_MISMATCH', error: expect.stringContaining(`refusing to write ${image}: it is ${image}, not a device under `) });
    }
    expect(hasGpt(image)).toBe(false);
  });

  test('a disk that is not there is refused', async () => {
    const missing = path.join(root, 'dev/sdq');
    const { outcome } = await run(workflowFor(missing, await reportedIdentity('sda')));
    expect(outcome).toMatchObject({
      ok: false,
      error: `refusing to write ${missing}: it cannot be opened (ENOENT), but the workflow was planned for a disk of 67108864 bytes, serial PHYF912300AB960CGN, wwn naa.55cd2e414f1a2b3c`,
    });
    expect(fs.existsSync(missing)).toBe(false);
  });

  test('a workflow without an identity (a local run, an older server) runs unchecked, and the log says so', async () => {
    const { outcome, log } = await run(workflowFor(sda));
    expect(outcome).toEqual({ ok: true });
    expect(log).toContain(`install disk ${sda}: the workflow carries no disk identity to check it against`);
  });
});

describe('verifyInstallDisk', () => {
  test('reads the NVMe namespace through /sys/class/block, its wwid from the block device', async () => {
    const nvme = path.join(root, 'dev/nvme0n1');
    const found = await verifyInstallDisk(nvme, { sizeBytes: 500107862016, serial: 'S4EVNX0N912345A', wwn: 'eui.002538591150a1b2' }, root);
    expect(found).toEqual({
      device: nvme,
      sysfs: path.join(root, 'sys/class/block/nvme0n1'),
      identity: { sizeBytes: 500107862016, serial: 'S4EVNX0N912345A', wwn: 'eui.002538591150a1b2' },
    });
  });

  test('a partition of the planned disk is not the planned disk', async () => {
    const err = await verifyInstallDisk(path.join(root, 'dev/sda1'), await reportedIdentity('sda'), root).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DragonflyError);
    expect((err as DragonflyError).code).toBe('DF_ERR_DISK_MISMATCH');
    expect((err as DragonflyError).data).toMatchObject({ found: { sizeBytes: 17179869184 } });
    expect((err as DragonflyError).message).toContain('its serial is (none) but the workflow was planned for serial PHYF912300AB960CGN');
  });
});

describe('identityDifferences', () => {
  const found = { sizeBytes: 1000, serial: 'A', wwn: 'naa.1' };

  test('serial and WWN are compared only when the plan has them (workflows planned before identities carried null)', () => {
    expect(identityDifferences({ sizeBytes: 1000 }, found)).toEqual([]);
    expect(identityDifferences({ sizeBytes: 1000, serial: 'A', wwn: 'naa.1' }, found)).toEqual([]);
  });

  // The attack: a forged report leaves serial and WWN out, hoping for a size-only check of the data disk.
  test('null means the report showed none: a disk that has one is another disk', () => {
    expect(identityDifferences({ sizeBytes: 1000, serial: null, wwn: null }, found)).toEqual([
      'its serial is A but the workflow was planned for a disk without one',
      'its wwn is naa.1 but the workflow was planned for a disk without one',
    ]);
    expect(identityDifferences({ sizeBytes: 1000, serial: null, wwn: null }, { sizeBytes: 1000 })).toEqual([]);
  });

  test('a planned serial or WWN the disk lacks is a difference', () => {
    expect(identityDifferences({ sizeBytes: 1000, serial: 'A', wwn: 'naa.1' }, { sizeBytes: 1000 })).toEqual([
      'its serial is (none) but the workflow was planned for serial A',
      'its wwn is (none) but the workflow was planned for wwn naa.1',
    ]);
  });
});
