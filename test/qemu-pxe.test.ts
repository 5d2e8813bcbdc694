// Acceptance: a QEMU VM (TCG) with the real iPXE NIC ROM boots from `dragonfly serve` through slirp's
// bootfile= (recipes/1-slirp-ipxe-http.sh): an unknown VM is recorded as Discovered with its memorable
// name; once assigned with a workflow pending it receives the imaging script; once provisioned, local boot.
// Mage is played by the test over the agent API (the Mage boot image is a later issue): its kernel URL
// 404s here, so iPXE falls back to re-chaining /boot.ipxe every 10 s, which is what lets us watch it.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workflowToken } from '../boot/tokens.js';
import { BIN, dragonfly, ROOT, tempDir } from './cli-helpers.js';

const NS = `dfqemu${process.pid}`;
const MAC = '52:54:00:12:34:56';
const PORT = 8080;
const HARDWARE = { disks: [{ name: 'vda', sizeBytes: 2 ** 31, partitions: [] }], nics: [{ mac: MAC }] };

let work: string;
let state: string;
let server: ChildProcess;
let qemu: ChildProcess;

const inNs = (args: string[]) => ['netns', 'exec', NS, ...args];

/** HTTP inside the namespace, with curl (the test process itself lives outside it). */
function curl(args: string[]): string {
  const r = spawnSync('ip', inNs(['curl', '-sS', '--max-time', '10', ...args]), { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`curl ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

function bootCount(fate: string): number {
  const m = new RegExp(`dragonfly_boot_scripts_total\\{fate="${fate}"\\} (\\d+)`).exec(curl(['-H', 'Authorization: Bearer qemu-pxe-token', `http://127.0.0.1:${PORT}/metrics`]));
  return m ? Number(m[1]) : 0;
}

async function until<T>(what: string, probe: () => T | undefined | false, timeoutMs: number): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}\n--- serial:\n${fs.existsSync(path.join(work, 'serial.log')) ? fs.readFileSync(path.join(work, 'serial.log'), 'utf8').slice(-3000) : ''}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

beforeAll(async () => {
  work = tempDir('dragonfly-qemu-');
  state = path.join(work, 'state');
  fs.writeFileSync(path.join(work, 'sercon-port.bin'), Buffer.from([0xf8, 0x03]));
  fs.mkdirSync(path.join(work, 'fleet'));
  expect(spawnSync('ip', ['netns', 'add', NS]).status).toBe(0);
  spawnSync('ip', inNs(['ip', 'link', 'set', 'lo', 'up']));
  server = spawn('ip', inNs([process.execPath, BIN, 'serve', '--state', state, '--http', `127.0.0.1:${PORT}`, '--tftp', 'off', '--no-mage-build', '--public-url', `http://10.0.2.2:${PORT}`]), {
    stdio: ['ignore', fs.openSync(path.join(work, 'server.log'), 'w'), 'inherit'],
    env: { ...process.env, DRAGONFLY_STATE: '', DRAGONFLY_API_TOKEN: 'qemu-pxe-token' },
  });
  await until('the server', () => spawnSync('ip', inNs(['curl', '-sf', `http://127.0.0.1:${PORT}/healthz`])).status === 0, 20_000);
  qemu = spawn(
    'ip',
    inNs([
      'qemu-system-x86_64', '-machine', 'pc,accel=tcg', '-m', '256', '-display', 'none', '-vga', 'none',
      '-fw_cfg', `name=etc/sercon-port,file=${path.join(work, 'sercon-port.bin')}`,
      '-serial', `file:${path.join(work, 'serial.log')}`, '-monitor', 'none', '-no-reboot',
      '-netdev', `user,id=n0,bootfile=http://10.0.2.2:${PORT}/boot.ipxe`, '-device', `e1000,netdev=n0,mac=${MAC}`, '-boot', 'n',
    ]),
    { stdio: ['ignore', fs.openSync(path.join(work, 'qemu.log'), 'w'), 'inherit'] },
  );
}, 60_000);

afterAll(() => {
  qemu?.kill('SIGKILL');
  server?.kill('SIGTERM');
  spawnSync('ip', ['netns', 'pids', NS], { encoding: 'utf8' }).stdout.split('\n').filter(Boolean).forEach((pid) => spawnSync('kill', ['-9', pid]));
  spawnSync('ip', ['netns', 'del', NS]);
  fs.rmSync(work, { recursive: true, force: true });
});

describe('QEMU + iPXE ROM against dragonfly serve', () => {
  it('discovers the VM, then images it, then boots it locally', async () => {
    const t0 = Date.now();
    // 1. Unknown VM: discovered at once, with its memorable name.
    const discovered = await until('the VM to be discovered', () => {
      const machines = (JSON.parse(curl(['-H', 'Authorization: Bearer qemu-pxe-token', `http://127.0.0.1:${PORT}/api/v1/machines`])) as { items: { mac: string; phase: string; memorableName: string; source: string }[] }).items;
      return machines.find((m) => m.mac === MAC);
    }, 90_000);
    expect(discovered).toMatchObject({ phase: 'Discovered', source: 'pxe', memorableName: 'CensusAbandonEmotionMember' });
    expect(bootCount('discovery')).toBeGreaterThanOrEqual(1);
    const tDiscovered = Date.now();

    // 2. Mage reports its disks (played by the test), the VM is declared in git and applied.
    curl(['-X', 'POST', '-H', 'content-type: application/json', '-d', JSON.stringify({ mac: MAC, hardware: HARDWARE }), `http://127.0.0.1:${PORT}/api/v1/agent/register`]);
    fs.writeFileSync(path.join(work, 'fleet', 'vm.yaml'), `apiVersion: dragonfly.computer/v1
kind: Machine
metadata: {name: vm-01, labels: {role: test}}
spec: {mac: ${MAC}}
---
apiVersion: dragonfly.computer/v1
kind: Template
metadata: {name: tiny}
spec:
  image: {url: "\${server.url}/images/tiny.raw", sha256: "${'ab'.repeat(32)}"}
  actions:
    - image2disk: {disk: \${disk}}
---
apiVersion: dragonfly.computer/v1
kind: Assignment
metadata: {name: test}
spec: {template: tiny, selector: {role: test}}
`);
    const applied = dragonfly(['apply', '--fleet', path.join(work, 'fleet'), '--state', state, '--auto-approve']);
    expect(applied.stderr).toBe('');
    expect(applied.status).toBe(0);
    const wfId = /Workflows created: (wf-\S+)/.exec(applied.stdout)![1]!;

    // 3. The same VM, on its next pass through /boot.ipxe, receives the imaging script.
    await until('the imaging script', () => bootCount('imaging') >= 1, 60_000);
    const tImaging = Date.now();

    // 4. Mage runs the workflow (played by the test, with the token the imaging script carried).
    const script = curl([`http://127.0.0.1:${PORT}/boot/${MAC}`]);
    const secret = fs.readFileSync(path.join(state, 'server.secret'), 'utf8').trim();
    const token = workflowToken(Buffer.from(secret, 'hex'), wfId);
    expect(script).toContain(`dragonfly.workflow=${wfId} dragonfly.token=${token}`);
    // Mage claims the workflow with the token, binding it to a secret of its own; later calls carry the secret.
    const mageSecret = 'c3'.repeat(32);
    curl(['-H', `authorization: Bearer ${token}`, '-H', 'content-type: application/json', '-X', 'POST', '-d', JSON.stringify({ secret: mageSecret }), `http://127.0.0.1:${PORT}/api/v1/agent/workflows/${wfId}/claim`]);
    const auth = ['-H', `authorization: Bearer ${mageSecret}`, '-H', 'content-type: application/json'];
    curl([...auth, '-X', 'POST', '-d', '{"state":"succeeded","percent":100}', `http://127.0.0.1:${PORT}/api/v1/agent/workflows/${wfId}/actions/0`]);
    curl([...auth, '-X', 'POST', '-d', '{"state":"succeeded"}', `http://127.0.0.1:${PORT}/api/v1/agent/workflows/${wfId}/finish`]);

    // 5. Provisioned: the VM's next request gets local boot.
    const before = bootCount('localboot');
    await until('the local-boot script', () => bootCount('localboot') > before, 60_000);
    const machines = JSON.parse(dragonfly(['machines', '--state', state, '--json']).stdout);
    expect(machines).toMatchObject([{ name: 'vm-01', phase: 'Ready', template: 'tiny@1' }]);
    console.log(`qemu-pxe: discovered after ${((tDiscovered - t0) / 1000).toFixed(1)} s, imaging script ${((tImaging - tDiscovered) / 1000).toFixed(1)} s later, local boot ${((Date.now() - tImaging) / 1000).toFixed(1)} s after that`);
  }, 240_000);
});
