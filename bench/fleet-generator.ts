// A synthetic fleet shaped like a real repo: one file per machine, templates and assignments apart.
import fs from 'node:fs';
import path from 'node:path';

export interface FleetShape {
  machines: number;
  templates: number;
  assignments: number;
}

function mac(i: number): string {
  const hex = (0x100000 + i).toString(16).padStart(6, '0').slice(-6);
  return `52:54:00:${hex.slice(0, 2)}:${hex.slice(2, 4)}:${hex.slice(4, 6)}`;
}

export function writeFleet(dir: string, shape: FleetShape): void {
  fs.rmSync(dir, { recursive: true, force: true });
  for (const sub of ['machines', 'templates', 'assignments']) fs.mkdirSync(path.join(dir, sub), { recursive: true });
  for (let i = 0; i < shape.machines; i++) {
    const rack = `r${Math.floor(i / 40)}`;
    fs.writeFileSync(
      path.join(dir, 'machines', `node-${String(i).padStart(5, '0')}.yaml`),
      `apiVersion: dragonfly.computer/v1
kind: Machine
metadata:
  name: node-${String(i).padStart(5, '0')}
  labels:
    rack: ${rack}
    group: g-${i % shape.assignments}
spec:
  mac: ${mac(i)}
  bmc:
    driver: ipmi
    address: 10.${Math.floor(i / 250) % 250}.${i % 250}.1
    credentialsRef: bmc-${rack}
`,
    );
  }
  for (let t = 0; t < shape.templates; t++) {
    fs.writeFileSync(
      path.join(dir, 'templates', `os-${t}.yaml`),
      `apiVersion: dragonfly.computer/v1
kind: Template
metadata:
  name: os-${t}
spec:
  image:
    url: http://images.lan/os-${t}.raw.zst
    sha256: "${t.toString(16).padStart(2, "0").repeat(32)}"
    size: 8GiB
  timeout: 30m
  actions:
    - partition:
        disk: \${disk}
        partitions:
          - {name: efi, size: 512MiB, type: efi, format: vfat}
          - {name: root, size: rest, type: linux, format: ext4}
    - image2disk: {partition: 2}
    - writefile: {partition: 2, path: /etc/hostname, content: "\${machine.name}\\n"}
    - writefile: {partition: 2, path: /etc/dragonfly/rack, content: "\${machine.labels.rack}\\n"}
    - kexec: {partition: 2, kernel: /boot/vmlinuz, initrd: /boot/initrd.img, cmdline: "root=LABEL=root ro"}
`,
    );
  }
  for (let a = 0; a < shape.assignments; a++) {
    fs.writeFileSync(
      path.join(dir, 'assignments', `a-${a}.yaml`),
      `apiVersion: dragonfly.computer/v1
kind: Assignment
metadata:
  name: a-${a}
spec:
  template: os-${a % shape.templates}
  selector: {group: g-${a}}
  generation: 1
  rollout: {maxParallel: 20, maxFailures: 2}
`,
    );
  }
}
