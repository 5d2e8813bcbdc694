// `dragonfly mage run`: a template's actions against a disk image, no server, as a user tests a template.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { dragonfly, tempDir } from './cli-helpers.js';

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

const TEMPLATE = `apiVersion: dragonfly.computer/v1
kind: Template
metadata: {name: layout-only}
spec:
  actions:
    - partition:
        disk: \${disk}
        table: gpt
        partitions:
          - {name: efi, size: 128MiB, type: efi, format: vfat}
          - {name: root, size: rest, type: linux, format: ext4}
    - writefile: {partition: 2, path: /etc/hostname, content: "\${machine.name}\\n", mode: "0600", uid: 0, gid: 0}
    - writefile: {partition: 2, path: /etc/dragonfly/rack, content: "\${machine.labels.rack}\\n"}
    - writefile: {partition: 1, path: /EFI/BOOT/marker.txt, content: "on the ESP\\n"}
`;

describe('dragonfly mage run', () => {
  it('partitions, formats and writes files into a disk image without root or loop devices', () => {
    const dir = tempDir();
    dirs.push(dir);
    const disk = path.join(dir, 'vm.img');
    execFileSync('truncate', ['-s', '1G', disk]);
    fs.writeFileSync(path.join(dir, 'template.yaml'), TEMPLATE);
    const r = dragonfly(['mage', 'run', '--template', path.join(dir, 'template.yaml'), '--disk', disk, '--set', 'machine.name=web-01', '--set', 'machine.labels.rack=r7']);
    expect(r.stderr).toContain('✓ writefile (action 4 of 4) done');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`All 4 actions succeeded on ${disk}.`);

    const table = JSON.parse(execFileSync('sfdisk', ['--json', disk], { encoding: 'utf8' })).partitiontable;
    expect(table.partitions.map((p: { name: string; type: string }) => [p.name, p.type])).toEqual([
      ['efi', 'C12A7328-F81F-11D2-BA4B-00A0C93EC93B'],
      ['root', '0FC63DAF-8483-4772-8E79-3D69D8477DE4'],
    ]);
    const root = `${disk}?offset=${table.partitions[1].start * 512}`;
    const cat = (p: string) => execFileSync('debugfs', ['-R', `cat ${p}`, root], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    expect(cat('/etc/hostname')).toBe('web-01\n');
    expect(cat('/etc/dragonfly/rack')).toBe('r7\n');
    expect(execFileSync('debugfs', ['-R', 'stat /etc/hostname', root], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })).toMatch(/Mode:\s+0600/);
    expect(execFileSync('mtype', ['-i', `${disk}@@${table.partitions[0].start * 512}`, '::/EFI/BOOT/marker.txt'], { encoding: 'utf8' })).toBe('on the ESP\n');
  });

  it('fails with the action and the reason, exit 1', () => {
    const dir = tempDir();
    dirs.push(dir);
    const disk = path.join(dir, 'small.img');
    execFileSync('truncate', ['-s', '64M', disk]);
    fs.writeFileSync(path.join(dir, 'template.yaml'), TEMPLATE);
    const r = dragonfly(['mage', 'run', '--template', path.join(dir, 'template.yaml'), '--disk', disk, '--set', 'machine.labels.rack=r1']);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/mage run failed: partition \(action 1 of 4\) failed: partition 2 \(root\) \('rest'\) would be empty/);
  });
});
