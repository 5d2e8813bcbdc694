// Test helper (not a test): a PXE lab in private network namespaces for the netns-*.test.ts files. A VM (QEMU,
// TCG) on a tap in a bridge, our DHCP server (compiled to JS: node cannot run our .ts inside a namespace),
// a tiny HTTP server standing in for boot/server.ts, in.tftpd standing in for boot/tftp, and IPv6 router
// advertisements. Modelled on shared/recipes/2b-netns-fullchain.sh. Every process it starts is killed and
// every namespace removed in stop(), from a process 'exit' handler, or by the next run (stale by owner pid).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
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
const ROUTER_IP = '192.168.77.2';
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

// The "existing DHCP server" of the proxy lab: leases addresses, knows nothing of PXE (no 60, 66, 67, 43).
// Built on our packet codec; 0.0.0.0:67 hears broadcasts, replies leave from its own address (see server.ts).
const PLAIN_DHCP = `
import dgram from 'node:dgram';
const [packetJs, ip] = process.argv.slice(2);
const { decodePacket, encodePacket, ipToBytes, macOf, u32Bytes } = await import(packetJs);
const fs = await import('node:fs');
const out = (o) => process.stdout.write(JSON.stringify({ t: Date.now(), src: 'router', ...o }) + '\\n');
const leases = new Map();
const bind = (address) => new Promise((resolve) => {
  const s = dgram.createSocket({ type: 'udp4', reuseAddr: true });
  s.bind(67, address, () => { s.setBroadcast(true); resolve(s); });
});
const own = await bind(ip);
const any = await bind('0.0.0.0');
const onMessage = (msg) => {
  const d = decodePacket(msg);
  if (!d.ok || d.packet.op !== 1) return;
  const p = d.packet, type = p.options.get(53)?.[0], sid = p.options.get(54);
  if (type !== 1 && type !== 3) return;
  if (type === 3 && sid && sid.join('.') !== ip) return; // the client chose another server
  const mac = macOf(p);
  if (!leases.has(mac)) leases.set(mac, '192.168.77.' + (100 + leases.size));
  const options = new Map([[53, Buffer.from([type === 1 ? 2 : 5])], [54, ipToBytes(ip)], [51, u32Bytes(3600)], [1, ipToBytes('255.255.255.0')]]);
  const reply = { ...p, op: 2, hops: 0, secs: 0, yiaddr: leases.get(mac), siaddr: '0.0.0.0', sname: '', file: '', options };
  out({ rx: type === 1 ? 'DISCOVER' : 'REQUEST', mac, ip: leases.get(mac) });
  own.send(encodePacket(reply), 68, '255.255.255.255');
};
own.on('message', onMessage);
any.on('message', onMessage);
out({ ready: true });
`;

// RFC 4861 router advertisements (§4.2, with a §4.6.2 prefix) to ff02::1 every second: they end iPXE's
// IPv6 autoconfiguration at once (~15 s per DHCP round without). Node has no raw sockets; python3 does.
const ROUTER_ADVERTISER = `
import socket, struct, sys, time
iface, prefix = sys.argv[1], sys.argv[2]
index = socket.if_nametoindex(iface)
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
ra = struct.pack('!BBHBBHII', 134, 0, 0, 64, 0, 0, 0, 0)
ra += struct.pack('!BBBBIII', 3, 4, 64, 0xc0, 3600, 1800, 0) + socket.inet_pton(socket.AF_INET6, prefix)
while True:
    try:
        s.sendto(ra, ('ff02::1', 0, 0, index))
    except OSError as e:
        print(e, flush=True)
    time.sleep(1)
`;

/**
 * One namespace (plus, for 'proxy', a second one for the plain DHCP server), its processes and its logs:
 * bridge br0 (192.168.77.1) + tap0 for the VM, our DHCP server and the HTTP stand-in (one node process),
 * in.tftpd, IPv6 router advertisements.
 */
export class Lab {
  readonly events: Event[] = [];
  readonly ns: string;
  readonly routerNs: string;
  work = '';
  private readonly children: ChildProcess[] = [];
  private readonly namespaces: string[] = [];
  qemuExit: string | undefined;

  /** `firmware`: what the VMs of this lab will be, so that start() checks for everything up front. */
  constructor(readonly mode: 'full' | 'proxy', private readonly firmware: readonly Firmware[] = ['ipxe-rom']) {
    this.ns = `${NS_PREFIX}${process.pid}${mode[0]}`;
    this.routerNs = `${NS_PREFIX}${process.pid}r`;
  }

  async start(): Promise<void> {
    requireTools(this.firmware);
    removeStaleNamespaces();
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
    for (const [name, text] of [['runner.mjs', RUNNER], ['plain-dhcp.mjs', PLAIN_DHCP], ['ra.py', ROUTER_ADVERTISER]]) fs.writeFileSync(path.join(this.work, name!), text!);

    this.addNamespace(this.ns);
    const ns = (...args: string[]) => run('ip', ['-n', this.ns, ...args]);
    ns('link', 'set', 'lo', 'up');
    ns('link', 'add', 'br0', 'type', 'bridge');
    ns('addr', 'add', `${IP}/24`, 'dev', 'br0');
    ns('-6', 'addr', 'add', 'fe80::1/64', 'dev', 'br0', 'nodad');
    ns('-6', 'addr', 'add', 'fd00:77::1/64', 'dev', 'br0', 'nodad');
    ns('link', 'set', 'br0', 'up');
    ns('tuntap', 'add', 'dev', 'tap0', 'mode', 'tap');
    ns('link', 'set', 'tap0', 'master', 'br0');
    ns('link', 'set', 'tap0', 'up');

    const onLine = (line: string) => {
      try {
        this.events.push(JSON.parse(line) as Event);
      } catch {
        this.events.push({ t: Date.now(), src: 'runner', text: line });
      }
    };
    if (this.mode === 'proxy') {
      // The existing DHCP server on "another host": its own namespace, wired into br0 by a veth pair.
      this.addNamespace(this.routerNs);
      ns('link', 'add', 'veth0', 'type', 'veth', 'peer', 'name', 'veth1', 'netns', this.routerNs);
      ns('link', 'set', 'veth0', 'master', 'br0');
      ns('link', 'set', 'veth0', 'up');
      run('ip', ['-n', this.routerNs, 'link', 'set', 'lo', 'up']);
      run('ip', ['-n', this.routerNs, 'addr', 'add', `${ROUTER_IP}/24`, 'dev', 'veth1']);
      run('ip', ['-n', this.routerNs, 'link', 'set', 'veth1', 'up']);
      this.spawn(this.routerNs, 'router', process.execPath, [path.join(this.work, 'plain-dhcp.mjs'), js.packet, ROUTER_IP], onLine);
    }

    const dhcp =
      this.mode === 'full'
        ? { interfaceIp: IP, mode: 'full', pool: { start: '192.168.77.100', end: '192.168.77.120', subnetMask: '255.255.255.0' } }
        : { interfaceIp: IP, mode: 'proxy' };
    // chainloadIpxeRoms: QEMU's ROM already is iPXE; this forces the TFTP leg a BIOS PXE ROM would take.
    const config = { serverIp: IP, httpUrl: `http://${IP}:${HTTP_PORT}`, bootfiles: { bios: 'undionly.kpxe', efi64: 'ipxe.efi' }, chainloadIpxeRoms: true };
    this.spawn(this.ns, 'runner', process.execPath, [path.join(this.work, 'runner.mjs'), js.server, JSON.stringify({ ip: IP, httpPort: HTTP_PORT, ipxeDir: IPXE_DIR, dhcp: { ...dhcp, config } })], onLine);
    // Our own TFTP server (boot/tftp, compiled into dist/ by the test's global setup), bound to IP:69.
    fs.writeFileSync(path.join(this.work, 'tftp.mjs'), TFTP_RUNNER);
    this.spawn(this.ns, 'tftpd', process.execPath, [path.join(this.work, 'tftp.mjs'), DIST_TFTP, IP, tftpRoot]);
    // Without python3 the chain still runs, ~15 s slower per DHCP round.
    if (spawnSync('sh', ['-c', 'command -v python3']).status === 0) this.spawn(this.ns, 'ra', 'python3', [path.join(this.work, 'ra.py'), 'br0', 'fd00:77::']);

    const ready = (src: string) => this.events.some((e) => e.src === src && e.ready);
    await until(() => ready('runner') && (this.mode === 'full' || ready('router')), 30_000, 'the DHCP and HTTP servers to be ready', 50).catch((e: Error) => {
      throw new Error(`${e.message}; stderr: ${this.read('runner.stderr')}${this.read('router.stderr')}`);
    });
    await until(() => /:69\b/.test(run('ip', ['netns', 'exec', this.ns, 'ss', '-uln'])), 15_000, 'the TFTP server to listen on :69', 50);
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
    const qemu = this.spawn(this.ns, 'qemu', 'qemu-system-x86_64', [...args, '-boot', 'n']);
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
    this.killAll();
    await Promise.all(this.children.map((c) => (c.exitCode !== null || c.signalCode !== null ? undefined : new Promise((r) => c.once('exit', r)))));
    if (this.work && !process.env.DRAGONFLY_KEEP_NETNS_LOGS) fs.rmSync(this.work, { recursive: true, force: true });
  }

  /** Synchronous, so that it also runs from a process 'exit' handler: every process in our namespaces, then the namespaces. */
  killAll(): void {
    for (const c of this.children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const ns of this.namespaces.splice(0)) {
      const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout ?? '';
      for (const pid of pids.split(/\s+/).filter(Boolean)) spawnSync('kill', ['-9', pid]);
      spawnSync('ip', ['netns', 'del', ns]);
    }
  }

  private addNamespace(name: string): void {
    run('ip', ['netns', 'add', name]);
    if (this.namespaces.length === 0) process.once('exit', () => this.killAll()); // the worker may end before afterAll
    this.namespaces.push(name);
  }

  private spawn(ns: string, name: string, cmd: string, args: string[], onLine?: (line: string) => void): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.children.push(child);
    child.stderr!.pipe(fs.createWriteStream(path.join(this.work, `${name}.stderr`)));
    let buf = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      buf += chunk.toString();
      for (let nl = buf.indexOf('\n'); nl !== -1; nl = buf.indexOf('\n')) {
        onLine?.(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
    });
    return child;
  }

  private read(name: string): string {
    try {
      return fs.readFileSync(path.join(this.work, name), 'utf8');
    } catch {
      return '';
    }
  }
}

function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr || r.error?.message}`);
  return r.stdout;
}

function requireTools(firmware: readonly Firmware[]): void {
  const missing: string[] = [];
  if (firmware.some((f) => f !== 'ipxe-rom') && !fs.existsSync(OVMF_CODE)) missing.push(`${OVMF_CODE} (Debian package ovmf: it belongs in scripts/install-deps.sh)`);
  if (process.getuid?.() !== 0) missing.push('root (network namespaces, tap devices, port 67)');
  for (const bin of ['ip', 'ss', 'qemu-system-x86_64']) if (spawnSync('sh', ['-c', `command -v ${bin}`]).status !== 0) missing.push(bin);
  for (const f of ['undionly.kpxe', 'ipxe.efi']) if (!fs.existsSync(path.join(IPXE_DIR, f))) missing.push(path.join(IPXE_DIR, f));
  if (!fs.existsSync('/dev/net/tun')) missing.push('/dev/net/tun');
  if (missing.length) throw new Error(`netns PXE test needs: ${missing.join(', ')} (run scripts/install-deps.sh as root)`);
}

/** Namespaces left by a run killed before its afterAll: ours by prefix, their owner pid gone. */
function removeStaleNamespaces(): void {
  for (const line of run('ip', ['netns', 'list']).split('\n')) {
    const m = new RegExp(`^(${NS_PREFIX}(\\d+)[a-z])\\b`).exec(line);
    if (!m || fs.existsSync(`/proc/${m[2]}`)) continue;
    for (const pid of run('ip', ['netns', 'pids', m[1]!]).split(/\s+/).filter(Boolean)) spawnSync('kill', ['-9', pid]);
    spawnSync('ip', ['netns', 'del', m[1]!]);
  }
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
