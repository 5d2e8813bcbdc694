// The fleet of the Mage process tests (test/mage-process.test.ts, test/mage-p2p.test.ts): db machines, one
// template that partitions the disk (EFI + root), writes the image into the root partition and then its
// hostname, and the assignment that joins them. `size` is the image's raw size, as the template declares it.
export function tinyFleetYaml(machines: { name: string; mac: string }[], image: { url: string; sha256: string; size: string }): string {
  const docs = machines.map((m) => `apiVersion: dragonfly.computer/v1\nkind: Machine\nmetadata: {name: ${m.name}, labels: {role: db}}\nspec: {mac: "${m.mac}"}\n`);
  return `${docs.join('---\n')}---
apiVersion: dragonfly.computer/v1
kind: Template
metadata: {name: tiny-12}
spec:
  image: {url: "${image.url}", sha256: "${image.sha256}", size: ${image.size}}
  actions:
    - partition: {disk: \${disk}, table: gpt, partitions: [{name: efi, size: 64MiB, type: efi, format: vfat}, {name: root, size: rest, type: linux}]}
    - image2disk: {partition: 2}
    - writefile: {partition: 2, path: /etc/hostname, content: "\${machine.name}\\n", mode: "0644"}
---
apiVersion: dragonfly.computer/v1
kind: Assignment
metadata: {name: db}
spec: {template: tiny-12, selector: {role: db}}
`;
}
