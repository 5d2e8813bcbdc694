// Test helper (not a test): a PXE lab in private network namespaces for the netns-*.test.ts files. A VM (QEMU,
// TCG) on a tap in a bridge (test/pxe-network.ts), our DHCP server (compiled to JS: node cannot run our .ts
// inside a namespace), a tiny HTTP server standing in for boot/server.ts, and our TFTP server. The whole
// product in such a network is test/lifecycle.test.ts.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PxeNetwork, requireNetnsTools } from '../../test/pxe-network.js';
import { until } from './test-builders.js';

/** Our TFTP server, as `dragonfly serve` runs it: the compiled module from dist/. */
const DIST_TFTP = fileURLToPath(new URL('../../dist/boot/tftp/', import.meta.url));
const TFTP_RUNNER = `
const [dir, ip, root] = process.argv.slice(2);
const { startTftpServer } = await import(dir + 'server.js');
const { directorySource } = await import(dir + 'source.js');
await startTftpServer({ host: ip, port: 69, source: directorySource(root) });
`;

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const NS_PREFIX = 'dfdhcp';
const IP = '192.168.77.1';
const HTTP_PORT = 8080;
const IPXE_DIR = '/usr/lib/ipxe';
const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';
export const SCRIPT_URL = `http://${IP}:${HTTP_PORT}/boot.ipxe`;

/** The VM's firmware: QEMU's iPXE NIC ROM under SeaBIOS, or OVMF (EDK2) doing UEFI PXE or UEFI HTTP boot itself. */
export type Firmware = 'ipxe-rom' | 'ovmf-pxe' | 'ovmf-http';

export interface Event {
  t: number;
  src: 'dhcp' | 'http' | 'runner' | 'router';
  [k: string]: unknown;
}

// Runs inside the namespace: our DHCP server plus the HTTP stand-in; every event one JSON line on stdout.
const RUNNER = `
import http from 'node:http';
const [serverJs, cfgJson] = process.argv.slice(2);
const { startProxyDhcp } = await import(serverJs);
const cfg = JSON.parse(cfgJson);
const fs = await import('node:fs');
const out = (o) => process.stdout.write(JSON.stringify({ t: Date.now(), ...o }) + '\\n');
const line = (level) => (obj, msg) => out({ src: 'dhcp', level, msg, ...obj });
const dhcp = await startProxyDhcp({ ...cfg.dhcp, log: { info: line('info'), warn: line('warn'), debug: line('debug') }, logLinesPer10s: 1000 });
const base = 'http://' + cfg.ip + ':' + cfg.httpPort;
http.createServer((req, res) => {
  out({ src: 'http', method: req.method, url: req.url, from: req.socket.remoteAddress });
  const p = req.url.split('?')[0];
  // The boot server serves Debian's iPXE binaries under /ipxe/ (boot/server.ts): UEFI HTTP boot fetches them here.
  const bin = p.startsWith('/ipxe/') && /^[a-z0-9._-]+$/.test(p.slice(6)) ? cfg.ipxeDir + '/' + p.slice(6) : undefined;
  if (bin && fs.existsSync(bin)) { const b = fs.readFileSync(bin); res.writeHead(200, { 'content-length': b.length }); res.end(req.method === 'HEAD' ? undefined : b); return; }
  const body = p === '/boot.ipxe' ? '#!ipxe\\necho dragonfly-netns: script reached\\nchain ' + base + '/marker/\${net0/mac:hexhyp}\\n'
    : p.startsWith('/marker/') ? '#!ipxe\\necho dragonfly-netns: marker reached\\nsleep 3600\\n' : undefined;
  if (!body) { res.writeHead(404); res.end(); return; }
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}).listen(cfg.httpPort, cfg.ip, () => out({ src: 'runner', ready: true, ports: dhcp.ports }));
`;

/**
 * One PXE network (test/pxe-network.ts; for 'proxy' with the plain DHCP server of "another host"), our DHCP
 * server and the HTTP stand-in (one node process), and our TFTP server.
 */
export class Lab {
  readonly ns: string;
  work = '';
  private net: PxeNetwork | undefined;
  qemuExit: string | undefined;

  /** `firmware`: what the VMs of this lab will be, so that start() checks for everything up front. */
  constructor(readonly mode: 'full' | 'proxy', private readonly firmware: readonly Firmware[] = ['ipxe-rom']) {
    this.ns = `${NS_PREFIX}${process.pid}${mode[0]}`;
  }

  get events(): Event[] {
    return (this.net?.events ?? []) as Event[];
  }

  async start(): Promise<void> {
    requireTools(this.firmware);
    this.work = fs.mkdtempSync(path.join(os.tmpdir(), `df-netns-${this.mode}-`));
    fs.chmodSync(this.work, 0o755);
    const js = compileServer(path.join(this.work, 'js'));
    const tftpRoot = path.join(this.work, 'tftp');
    fs.mkdirSync(tftpRoot, { mode: 0o755 });
    for (const f of ['undionly.kpxe', 'ipxe.efi']) {
      fs.copyFileSync(path.join(IPXE_DIR, f), path.join(tftpRoot, f));
      fs.chmodSync(path.join(tftpRoot, f), 0o644);
    }
    fs.writeFileSync(path.join(this.work, 'sercon-port.bin'), Buffer.from([0xf8, 0x03])); // serial console on 0x3f8
    fs.writeFileSync(path.join(this.work, 'runner.mjs'), RUNNER);
    const net = new PxeNetwork({ prefix: NS_PREFIX, tag: this.mode[0]!, taps: 1, work: this.work, ...(this.mode === 'proxy' ? { router: { packetJs: js.packet } } : {}) });
    this.net = net;
    await net.start();

    const dhcp =
      this.mode === 'full'
        ? { interfaceIp: IP, mode: 'full', pool: { start: '192.168.77.100', end: '192.168.77.120', subnetMask: '255.255.255.0' } }
        : { interfaceIp: IP, mode: 'proxy' };
    // chainloadIpxeRoms: QEMU's ROM already is iPXE; this forces the TFTP leg a BIOS PXE ROM would take.
    const config = { serverIp: IP, httpUrl: `http://${IP}:${HTTP_PORT}`, bootfiles: { bios: 'undionly.kpxe', efi64: 'ipxe.efi' }, chainloadIpxeRoms: true };
    net.spawn('runner', process.execPath, [path.join(this.work, 'runner.mjs'), js.server, JSON.stringify({ ip: IP, httpPort: HTTP_PORT, ipxeDir: IPXE_DIR, dhcp: { ...dhcp, config } })], { json: true });
    // Our own TFTP server (boot/tftp, compiled into dist/ by the test's global setup), bound to IP:69.
    fs.writeFileSync(path.join(this.work, 'tftp.mjs'), TFTP_RUNNER);
    net.spawn('tftpd', process.execPath, [path.join(this.work, 'tftp.mjs'), DIST_TFTP, IP, tftpRoot]);

    await net.until(() => this.events.some((e) => e.src === 'runner' && e.ready), 30_000, 'the DHCP and HTTP servers to be ready', 'runner');
    await net.udpListening(69);
  }

  /** Boot a VM and wait until it fetched the marker URL and its console says it ran the marker script. */
  async bootVm(mac: string, firmware: Firmware = 'ipxe-rom'): Promise<number> {
    const t0 = Date.now();
    const common = ['-display', 'none', '-vga', 'none', '-monitor', 'none', '-no-reboot', '-serial', `file:${path.join(this.work, 'serial.log')}`, '-netdev', 'tap,id=n0,ifname=tap0,script=no,downscript=no'];
    let args: string[];
    if (firmware === 'ipxe-rom') {
      args = ['-machine', 'pc,accel=tcg', '-m', '128', ...common, '-fw_cfg', `name=etc/sercon-port,file=${path.join(this.work, 'sercon-port.bin')}`, '-device', `e1000,netdev=n0,mac=${mac}`];
    } else {
      const vars = path.join(this.work, 'OVMF_VARS.fd');
      fs.copyFileSync(OVMF_VARS, vars);
      // romfile= (none): EDK2's own virtio-net driver and network stack, no iPXE in the firmware. With UEFI PXE
      // switched off by OVMF's fw_cfg knobs, the firmware goes straight to UEFI HTTP boot.
      const httpOnly = firmware === 'ovmf-http' ? ['-fw_cfg', 'name=opt/org.tianocore/IPv4PXESupport,string=no', '-fw_cfg', 'name=opt/org.tianocore/IPv6PXESupport,string=no'] : [];
      args = ['-machine', 'q35,accel=tcg', '-m', '512', ...common, '-drive', `if=pflash,format=raw,readonly=on,file=${OVMF_CODE}`, '-drive', `if=pflash,format=raw,file=${vars}`, ...httpOnly, '-device', `virtio-net-pci,netdev=n0,mac=${mac},romfile=`];
    }
    const qemu = this.net!.spawn('qemu', 'qemu-system-x86_64', [...args, '-boot', 'n']);
    qemu.once('exit', (code, signal) => (this.qemuExit = `qemu exited (${code ?? signal})`));
    // The marker request, and the VM's own word that it ran the marker script (the serial file lags the HTTP log).
    const done = () => this.marker() !== undefined && this.serial().includes('dragonfly-netns: marker reached');
    await until(() => done() || this.qemuExit !== undefined, 240_000, 'the VM to fetch the marker URL', 100).catch((e: Error) => {
      throw new Error(`${e.message}\n--- events\n${this.events.map((x) => JSON.stringify(x)).join('\n')}\n--- serial\n${this.serial()}`);
    });
    if (this.qemuExit) throw new Error(`${this.qemuExit}\n${this.read('qemu.stderr')}\n${this.serial()}`);
    return t0;
  }

  marker(): Event | undefined {
    return this.events.find((e) => e.src === 'http' && String(e.url).startsWith('/marker/'));
  }

  /** Our server's distinct answers to `mac` in first-seen order, as "TYPE via bootfile" (firmware retransmits under load). */
  answers(mac: string): string[] {
    return [...new Set(this.events.filter((e) => e.src === 'dhcp' && e.msg === 'PXE answer' && e.mac === mac).map((e) => `${e.type} ${e.via} ${e.bootfile}`))];
  }

  timings(t0: number): string {
    const at = (pred: (e: Event) => boolean) => {
      const e = this.events.find(pred);
      return e ? `${((e.t - t0) / 1000).toFixed(1)} s` : '-';
    };
    return (
      `first DHCP answer ${at((e) => e.src === 'dhcp' && e.msg === 'PXE answer')}, script DHCP answer ${at((e) => e.src === 'dhcp' && e.bootfile === SCRIPT_URL)}, ` +
      `GET /boot.ipxe ${at((e) => e.url === '/boot.ipxe')}, marker ${at((e) => e === this.marker())}`
    );
  }

  /** The VM's serial console without ANSI escapes and backspace spinners. */
  serial(): string {
    return this.read('serial.log')
      .replace(/\x1b\[[0-9;?]*[a-zA-Z]|\x1bc/g, '')
      .replace(/[\b]/g, '')
      .replace(/\r/g, '');
  }

  async stop(): Promise<void> {
    await this.net?.stop();
    if (this.work && !process.env.DRAGONFLY_KEEP_NETNS_LOGS) fs.rmSync(this.work, { recursive: true, force: true });
  }

  private read(name: string): string {
    return this.net?.read(name) ?? '';
  }
}

function requireTools(firmware: readonly Firmware[]): void {
  const missing: string[] = [];
  if (firmware.some((f) => f !== 'ipxe-rom') && !fs.existsSync(OVMF_CODE)) missing.push(`${OVMF_CODE} (Debian package ovmf: it belongs in scripts/install-deps.sh)`);
  for (const f of ['undionly.kpxe', 'ipxe.efi']) if (!fs.existsSync(path.join(IPXE_DIR, f))) missing.push(path.join(IPXE_DIR, f));
  requireNetnsTools(['ip', 'ss', 'qemu-system-x86_64'], missing);
}

/** Node cannot run our .ts inside a namespace: compile the DHCP server (and what it imports) to plain JS. */
function compileServer(outDir: string): { server: string; packet: string } {
  const tsc = path.join(ROOT, 'node_modules/typescript/bin/tsc');
  const args = ['--ignoreConfig', '--outDir', outDir, '--rootDir', ROOT, '--module', 'NodeNext', '--moduleResolution', 'NodeNext', '--target', 'ES2022'];
  const r = spawnSync(process.execPath, [tsc, ...args, '--skipLibCheck', '--types', 'node', '--typeRoots', path.join(ROOT, 'node_modules/@types'), path.join(ROOT, 'boot/dhcp/server.ts')], { encoding: 'utf8' });
  const server = path.join(outDir, 'boot/dhcp/server.js');
  if (!fs.existsSync(server)) throw new Error(`compiling boot/dhcp/server.ts failed: ${r.stdout}${r.stderr}`);
  fs.writeFileSync(path.join(outDir, 'package.json'), '{"type":"module"}\n');
  return { server, packet: path.join(outDir, 'boot/dhcp/packet.js') };
}
