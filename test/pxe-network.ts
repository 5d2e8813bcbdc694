// Test and bench helper (not a test): a PXE network in private network namespaces, modelled on
// shared/recipes/2b-netns-fullchain.sh. Namespace `ns` holds bridge br0 (SERVER_IP/24) with one tap per VM;
// optionally a plain DHCP server ("the router": leases addresses, knows nothing of PXE) in a second namespace
// wired into br0 by a veth pair, like a router on another host; IPv6 router advertisements; and optionally a
// management veth to the host's namespace, so that a test process reaches servers inside the lab and they
// reach servers the test runs. Every process started here is killed and every namespace removed by
// killAll(), from a process 'exit' handler, or by the next run (stale by owner pid).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

export const SUBNET = '192.168.77';
/** The PXE server's address on br0. */
export const SERVER_IP = `${SUBNET}.1`;
/** The plain DHCP server's address, and the first address it leases. */
export const ROUTER_IP = `${SUBNET}.2`;
export const FIRST_LEASE = `${SUBNET}.100`;

export interface NetEvent {
  t: number;
  src: string;
  [k: string]: unknown;
}

export interface PxeNetworkOptions {
  /** Namespace names start with this; namespaces of a prefix whose owner pid is gone are removed at start. */
  prefix: string;
  /** One lower-case letter: tells several networks of one process apart. */
  tag: string;
  /** Taps on the bridge for VMs: tap0 … tap(N-1). */
  taps: number;
  /** Logs go here: NAME.stderr and NAME.log for every process spawned. */
  work: string;
  /** Start the plain DHCP server: `packetJs` is our compiled boot/dhcp/packet.js (its codec). */
  router?: { packetJs: string };
  /** A veth between the host's namespace and `ns`. */
  mgmt?: boolean;
}

// The "existing DHCP server": leases addresses, knows nothing of PXE (no 60, 66, 67, 43). Built on our packet
// codec; 0.0.0.0:67 hears broadcasts, replies leave from its own address.
const PLAIN_DHCP = `
import dgram from 'node:dgram';
const [packetJs, ip, subnet] = process.argv.slice(2);
const { decodePacket, encodePacket, ipToBytes, macOf, u32Bytes } = await import(packetJs);
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
  if (!leases.has(mac)) leases.set(mac, subnet + '.' + (100 + leases.size));
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

export class PxeNetwork {
  /** JSON lines from every process spawned with `json`, and the router's. */
  readonly events: NetEvent[] = [];
  readonly ns: string;
  readonly routerNs: string;
  /** With `mgmt`: the host's end and the lab's end of the management veth (a /30 in 198.18.0.0/15, RFC 2544's benchmark range). */
  readonly mgmt: { host: string; lab: string };
  private readonly hostVeth: string;
  private readonly children: ChildProcess[] = [];
  private readonly namespaces: string[] = [];

  constructor(private readonly opts: PxeNetworkOptions) {
    if (!/^[a-z]$/.test(opts.tag)) throw new Error(`PxeNetwork tag must be one lower-case letter, not ${JSON.stringify(opts.tag)}`);
    this.ns = `${opts.prefix}${process.pid}${opts.tag}`;
    this.routerNs = `${this.ns}r`;
    this.hostVeth = `${this.ns}h`;
    if (this.hostVeth.length > 15) throw new Error(`interface name ${this.hostVeth} is longer than 15 characters: use a shorter prefix`);
    const k = opts.tag.charCodeAt(0) - 97;
    const octets = `198.18.${process.pid % 256}`;
    this.mgmt = { host: `${octets}.${4 * k + 1}`, lab: `${octets}.${4 * k + 2}` };
  }

  /** Checks what it needs, removes stale namespaces, builds the network and starts the router and the RAs. */
  async start(): Promise<void> {
    requireNetnsTools(['ip', 'ss']);
    removeStaleNamespaces(this.opts.prefix);
    fs.writeFileSync(path.join(this.opts.work, 'plain-dhcp.mjs'), PLAIN_DHCP);
    fs.writeFileSync(path.join(this.opts.work, 'ra.py'), ROUTER_ADVERTISER);

    this.addNamespace(this.ns);
    const ns = (...args: string[]) => run('ip', ['-n', this.ns, ...args]);
    ns('link', 'set', 'lo', 'up');
    ns('link', 'add', 'br0', 'type', 'bridge');
    ns('addr', 'add', `${SERVER_IP}/24`, 'dev', 'br0');
    ns('-6', 'addr', 'add', 'fe80::1/64', 'dev', 'br0', 'nodad');
    ns('-6', 'addr', 'add', 'fd00:77::1/64', 'dev', 'br0', 'nodad');
    ns('link', 'set', 'br0', 'up');
    for (let i = 0; i < this.opts.taps; i++) {
      ns('tuntap', 'add', 'dev', `tap${i}`, 'mode', 'tap');
      ns('link', 'set', `tap${i}`, 'master', 'br0');
      ns('link', 'set', `tap${i}`, 'up');
    }
    if (this.opts.mgmt) {
      run('ip', ['link', 'add', this.hostVeth, 'type', 'veth', 'peer', 'name', 'mgmt0', 'netns', this.ns]);
      run('ip', ['addr', 'add', `${this.mgmt.host}/30`, 'dev', this.hostVeth]);
      run('ip', ['link', 'set', this.hostVeth, 'up']);
      ns('addr', 'add', `${this.mgmt.lab}/30`, 'dev', 'mgmt0');
      ns('link', 'set', 'mgmt0', 'up');
    }
    if (this.opts.router) {
      this.addNamespace(this.routerNs);
      ns('link', 'add', 'veth0', 'type', 'veth', 'peer', 'name', 'veth1', 'netns', this.routerNs);
      ns('link', 'set', 'veth0', 'master', 'br0');
      ns('link', 'set', 'veth0', 'up');
      run('ip', ['-n', this.routerNs, 'link', 'set', 'lo', 'up']);
      run('ip', ['-n', this.routerNs, 'addr', 'add', `${ROUTER_IP}/24`, 'dev', 'veth1']);
      run('ip', ['-n', this.routerNs, 'link', 'set', 'veth1', 'up']);
      this.spawn('router', process.execPath, [path.join(this.opts.work, 'plain-dhcp.mjs'), this.opts.router.packetJs, ROUTER_IP, SUBNET], { ns: this.routerNs, json: true });
    }
    // Without python3 every chain still runs, ~15 s slower per DHCP round.
    if (spawnSync('sh', ['-c', 'command -v python3']).status === 0) this.spawn('ra', 'python3', [path.join(this.opts.work, 'ra.py'), 'br0', 'fd00:77::']);
    if (this.opts.router) await this.until(() => this.events.some((e) => e.src === 'router' && e.ready), 30_000, 'the plain DHCP server to start', 'router');
  }

  /**
   * Run `cmd` inside the lab namespace (or `ns`). stderr goes to NAME.stderr, stdout to NAME.log; with `json`,
   * stdout lines that parse are also pushed to `events` (with src NAME unless they carry one).
   */
  spawn(name: string, cmd: string, args: string[], options: { ns?: string; json?: boolean; env?: NodeJS.ProcessEnv; cwd?: string } = {}): ChildProcess {
    const child = spawn('ip', ['netns', 'exec', options.ns ?? this.ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: options.env ?? process.env, cwd: options.cwd });
    this.children.push(child);
    child.stderr!.pipe(fs.createWriteStream(path.join(this.opts.work, `${name}.stderr`)));
    child.stdout!.pipe(fs.createWriteStream(path.join(this.opts.work, `${name}.log`)));
    if (options.json) {
      let buf = '';
      child.stdout!.on('data', (chunk: Buffer) => {
        buf += chunk.toString();
        for (let nl = buf.indexOf('\n'); nl !== -1; nl = buf.indexOf('\n')) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          try {
            this.events.push({ t: Date.now(), src: name, ...(JSON.parse(line) as object) } as NetEvent);
          } catch {
            this.events.push({ t: Date.now(), src: name, text: line });
          }
        }
      });
    }
    return child;
  }

  /** The text of a log this network wrote (NAME.log, NAME.stderr …), '' when there is none. */
  read(file: string): string {
    try {
      return fs.readFileSync(path.join(this.opts.work, file), 'utf8');
    } catch {
      return '';
    }
  }

  /** Wait for `probe`; on timeout the error carries the stderr of `logName`. */
  async until(probe: () => boolean, ms: number, what: string, logName?: string): Promise<void> {
    const end = Date.now() + ms;
    while (!probe()) {
      if (Date.now() > end) throw new Error(`timed out waiting for ${what}${logName ? `; ${logName}.stderr: ${this.read(`${logName}.stderr`)}` : ''}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Resolves once something listens on UDP `port` inside the lab namespace. */
  async udpListening(port: number, ms = 15_000): Promise<void> {
    await this.until(() => new RegExp(`:${port}\\b`).test(run('ip', ['netns', 'exec', this.ns, 'ss', '-uln'])), ms, `something to listen on UDP ${port}`);
  }

  async stop(): Promise<void> {
    this.killAll();
    await Promise.all(this.children.map((c) => (c.exitCode !== null || c.signalCode !== null ? undefined : new Promise((r) => c.once('exit', r)))));
  }

  /** Synchronous, so that it also runs from a process 'exit' handler: every process in our namespaces, then the namespaces. */
  killAll(): void {
    for (const c of this.children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    for (const ns of this.namespaces.splice(0)) deleteNamespace(ns);
  }

  private addNamespace(name: string): void {
    run('ip', ['netns', 'add', name]);
    if (this.namespaces.length === 0) process.once('exit', () => this.killAll()); // a test worker may end before afterAll
    this.namespaces.push(name);
  }
}

export function run(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr || r.error?.message}`);
  return r.stdout;
}

/** Root, /dev/net/tun and the commands named: or one error naming all that is missing. */
export function requireNetnsTools(commands: readonly string[], extra: string[] = []): void {
  const missing = [...extra];
  if (process.getuid?.() !== 0) missing.push('root (network namespaces, tap devices, port 67)');
  for (const bin of commands) if (spawnSync('sh', ['-c', `command -v ${bin}`]).status !== 0) missing.push(bin);
  if (!fs.existsSync('/dev/net/tun')) missing.push('/dev/net/tun');
  if (missing.length) throw new Error(`this test needs: ${missing.join(', ')} (run scripts/install-deps.sh as root)`);
}

function deleteNamespace(ns: string): void {
  const pids = spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout ?? '';
  for (const pid of pids.split(/\s+/).filter(Boolean)) spawnSync('kill', ['-9', pid]);
  spawnSync('ip', ['netns', 'del', ns]);
}

/** Namespaces left by a run killed before its clean-up: ours by prefix, their owner pid gone. */
function removeStaleNamespaces(prefix: string): void {
  for (const line of run('ip', ['netns', 'list']).split('\n')) {
    const m = new RegExp(`^(${prefix}(\\d+)[a-z]+)\\b`).exec(line);
    if (m && !fs.existsSync(`/proc/${m[2]}`)) deleteNamespace(m[1]!);
  }
}
