// Dragonfly's proxyDHCP on UDP 67 and 4011 (node:dgram): answers PXE clients next to an existing DHCP
// server and never leases an address. `mode: 'full'` adds a test-only lease pool (lease-pool.ts) for
// network-namespace tests where no other DHCP server exists.
//
// Sockets: broadcasts to 255.255.255.255:67 reach only a socket bound to 0.0.0.0, and replies must leave
// from `interfaceIp` so that Linux sends a limited broadcast out of the interface owning that address
// (node has neither IP_PKTINFO nor SO_BINDTODEVICE). So port 67 has two sockets (0.0.0.0 to hear
// broadcasts, interfaceIp to hear unicast and to send), and 4011 one (interfaceIp; PXE sends it unicast).
import dgram from 'node:dgram';
import { DragonflyError } from '../../schemas/errors.js';
import { WindowLimiter } from '../limiter.js';
import {
  BOOTREQUEST,
  decodePacket,
  encodePacket,
  ipToBytes,
  macOf,
  MESSAGE_TYPE,
  OPTION,
  type DhcpPacket,
} from './packet.js';
import { configProblems, decide, replyFor, replyHeader, type PolicyConfig, type RequestContext } from './policy.js';
import { TestLeasePool, type TestPoolConfig } from './lease-pool.js';

/** pino-compatible: `log.info({ mac }, 'offer')`. */
export interface DhcpLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  debug?(obj: object, msg: string): void;
}

export interface StartProxyDhcpOptions {
  /** The address on the boot network to answer from (not 0.0.0.0), usually config.serverIp. */
  interfaceIp: string;
  /** UDP ports: dhcp 67, pxe 4011, client 68 by default; tests pass high ports (0 picks free ones). */
  ports?: { dhcp: number; pxe: number; client?: number };
  config: PolicyConfig;
  log?: DhcpLog;
  /** 'proxy' (default, production) or 'full': TEST-ONLY, leases from `pool`. */
  mode?: 'proxy' | 'full';
  /** Full mode only (test-only): the addresses to lease. */
  pool?: TestPoolConfig;
  /** Log lines per kind (answer, ignored, malformed, error) per 10 s; the rest are counted (default 20). */
  logLinesPer10s?: number;
  /** How long a MAC handed the iPXE binary counts as chained (config.chainloadIpxeRoms); default 120 s. */
  chainWindowMs?: number;
}

export interface DhcpStats {
  received: number;
  malformed: number;
  ignored: number;
  offers: number;
  acks: number;
  naks: number;
  sendErrors: number;
  /** Exceptions caught around one datagram's handling: always a bug, never a crash. */
  handlerErrors: number;
  suppressedLogLines: number;
  /** Full mode: addresses leased. */
  leases: number;
}

export interface ProxyDhcpServer {
  /** The ports actually bound (differs from the options when they asked for 0). */
  ports: { dhcp: number; pxe: number; client: number };
  stats(): DhcpStats;
  close(): Promise<void>;
}

const BROADCAST = '255.255.255.255';
const ZERO = '0.0.0.0';

export async function startProxyDhcp(opts: StartProxyDhcpOptions): Promise<ProxyDhcpServer> {
  const mode = opts.mode ?? 'proxy';
  const problems = configProblems(opts.config);
  if (!isIpv4(opts.interfaceIp) || opts.interfaceIp === ZERO) problems.push(`interfaceIp ${JSON.stringify(opts.interfaceIp)} must be this host's IPv4 address on the boot network`);
  if (mode === 'full' && !opts.pool) problems.push("mode 'full' (test-only) needs a pool");
  if (mode === 'proxy' && opts.pool) problems.push("a pool is only used by the test-only mode 'full'; proxyDHCP never leases");
  let pool: TestLeasePool | undefined;
  try {
    if (mode === 'full' && opts.pool) pool = new TestLeasePool(opts.pool);
  } catch (e) {
    problems.push(`pool: ${(e as Error).message}`);
  }
  if (problems.length) throw new DragonflyError('DF_ERR_SERVE_CONFIG', `proxyDHCP: ${problems.join('; ')}`, { problems });

  const config = opts.config;
  const clientPort = opts.ports?.client ?? 68;
  const stats: DhcpStats = { received: 0, malformed: 0, ignored: 0, offers: 0, acks: 0, naks: 0, sendErrors: 0, handlerErrors: 0, suppressedLogLines: 0, leases: 0 };
  const log = new LimitedLog(opts.log, opts.logLinesPer10s ?? 20, stats);
  const chained = new ChainMemory(opts.chainWindowMs ?? 120_000);

  const sockets: dgram.Socket[] = [];
  const closeAll = () => Promise.all(sockets.map((s) => new Promise<void>((resolve) => s.close(() => resolve())))).then(() => undefined);
  let dhcpIf: dgram.Socket, pxe: dgram.Socket;
  let ports: ProxyDhcpServer['ports'];
  try {
    dhcpIf = await bind(opts.interfaceIp, opts.ports?.dhcp ?? 67, sockets);
    const dhcpPort = dhcpIf.address().port;
    const dhcpAny = await bind(ZERO, dhcpPort, sockets);
    pxe = await bind(opts.interfaceIp, opts.ports?.pxe ?? 4011, sockets);
    ports = { dhcp: dhcpPort, pxe: pxe.address().port, client: clientPort };
    for (const s of [dhcpIf, dhcpAny]) s.on('message', (msg, rinfo) => onDatagram(msg, rinfo, 'dhcp'));
    pxe.on('message', (msg, rinfo) => onDatagram(msg, rinfo, 'pxe'));
  } catch (e) {
    await closeAll();
    throw e;
  }
  for (const s of sockets) s.on('error', (err) => log.line('error', 'warn', { err: err.message }, 'proxyDHCP socket error'));
  if (mode === 'full') opts.log?.warn({ pool: opts.pool }, "DHCP in TEST-ONLY full mode: leasing addresses; never run this next to a real DHCP server");

  function onDatagram(msg: Buffer, rinfo: dgram.RemoteInfo, via: 'dhcp' | 'pxe'): void {
    stats.received++;
    try {
      handle(msg, rinfo, via);
    } catch (err) {
      // A datagram must never take the server down; a throw here is a bug to fix, counted and logged.
      stats.handlerErrors++;
      log.line('error', 'warn', { from: rinfo.address, err: (err as Error).message }, 'proxyDHCP failed on a datagram');
    }
  }

  function handle(msg: Buffer, rinfo: dgram.RemoteInfo, via: 'dhcp' | 'pxe'): void {
    const decoded = decodePacket(msg);
    if (!decoded.ok) {
      stats.malformed++;
      log.line('malformed', 'warn', { from: rinfo.address, reason: decoded.error.reason, detail: decoded.error.message }, 'malformed DHCP datagram');
      return;
    }
    const req = decoded.packet;
    const mac = macOf(req);
    const type = req.options.get(OPTION.MESSAGE_TYPE)?.[0];
    if (pool && req.op === BOOTREQUEST && (type === MESSAGE_TYPE.RELEASE || type === MESSAGE_TYPE.DECLINE)) {
      pool.release(mac);
      stats.leases = pool.size;
      return;
    }

    const context: RequestContext = { port: via, mode, chainedRecently: chained.chainedBefore(mac, req.xid) };
    const d = decide(req, config, context);
    if (!d.answer) {
      stats.ignored++;
      log.line('ignored', 'debug', { from: rinfo.address, mac, via, reason: d.reason }, 'not answered');
      return;
    }
    const answer = replyFor(req, d, config, context);
    const reply = answer.packet;

    // TEST-ONLY full mode: the lease goes into the same reply (on 67; a 4011 request already has its address).
    if (pool && via === 'dhcp') {
      let ip: string | undefined;
      if (d.replyType === MESSAGE_TYPE.OFFER) {
        ip = pool.offer(mac);
        if (!ip) {
          stats.ignored++;
          log.line('error', 'warn', { mac }, 'test lease pool exhausted');
          return;
        }
      } else {
        const outcome = pool.request(mac, d.info.requestedIp ?? (req.ciaddr !== ZERO ? req.ciaddr : undefined));
        if ('nak' in outcome) {
          stats.naks++;
          log.line('answer', 'info', { mac, nak: outcome.nak }, 'NAK');
          send(dhcpIf, nakFor(req, config.serverIp), destination(req, via, rinfo, true));
          return;
        }
        ip = outcome.ack;
      }
      reply.yiaddr = ip;
      for (const [code, value] of pool.leaseOptions()) reply.options.set(code, value);
      stats.leases = pool.size;
    }

    if (d.replyType === MESSAGE_TYPE.ACK) stats.acks++;
    else stats.offers++;
    // Any firmware handed our binary: its DHCP round comes next with user class iPXE, and behind an iPXE ROM
    // with exactly the ROM's options; only this memory tells it apart (config.chainloadIpxeRoms).
    if (answer.stage === 'binary') chained.mark(mac, req.xid);
    const to = destination(req, via, rinfo, false);
    log.line('answer', 'info', { mac, xid: req.xid.toString(16).padStart(8, '0'), via, type: d.replyType === MESSAGE_TYPE.ACK ? 'ACK' : 'OFFER', client: answer.client, arch: answer.arch, bootfile: answer.bootfile, ...(reply.yiaddr !== ZERO ? { ip: reply.yiaddr } : {}), to: `${to.address}:${to.port}` }, 'PXE answer');
    send(via === 'pxe' ? pxe : dhcpIf, reply, to);
  }

  // RFC 2131 §4.1: to the relay when giaddr is set; NAKs broadcast; to ciaddr when the client has one;
  // else broadcast (unicast to yiaddr needs an ARP entry user space cannot add; every PXE ROM hears
  // broadcasts, and a proxyDHCP offer is always broadcast). 4011 is answered where the request came from.
  function destination(req: DhcpPacket, via: 'dhcp' | 'pxe', rinfo: dgram.RemoteInfo, nak: boolean): { address: string; port: number } {
    if (via === 'pxe') return { address: rinfo.address, port: rinfo.port };
    if (req.giaddr !== ZERO) return { address: req.giaddr, port: ports.dhcp };
    if (!nak && req.ciaddr !== ZERO) return { address: req.ciaddr, port: clientPort };
    return { address: BROADCAST, port: clientPort };
  }

  function send(socket: dgram.Socket, packet: DhcpPacket, to: { address: string; port: number }): void {
    socket.send(encodePacket(packet), to.port, to.address, (err) => {
      if (!err) return;
      stats.sendErrors++;
      log.line('error', 'warn', { to: `${to.address}:${to.port}`, err: err.message }, 'proxyDHCP send failed');
    });
  }

  let closed: Promise<void> | undefined;
  return {
    ports,
    stats: () => ({ ...stats }),
    close: () => {
      if (!closed) {
        log.flush();
        closed = closeAll();
      }
      return closed;
    },
  };
}

/** RFC 2131 §4.3.2 / table 3: a NAK carries only the message type and the server identifier. */
function nakFor(req: DhcpPacket, serverIp: string): DhcpPacket {
  return {
    ...replyHeader(req),
    ciaddr: ZERO,
    yiaddr: ZERO,
    siaddr: ZERO,
    file: '',
    options: new Map([
      [OPTION.MESSAGE_TYPE, Buffer.from([MESSAGE_TYPE.NAK])],
      [OPTION.SERVER_ID, ipToBytes(serverIp)],
    ]),
  };
}

function bind(address: string, port: number, sockets: dgram.Socket[]): Promise<dgram.Socket> {
  // reuseAddr: the 0.0.0.0 and interfaceIp sockets share the DHCP port.
  const socket = dgram.createSocket({ type: 'udp4', reuseAddr: true });
  sockets.push(socket);
  return new Promise((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      const hint =
        err.code === 'EACCES'
          ? 'ports below 1024 need root or CAP_NET_BIND_SERVICE'
          : err.code === 'EADDRNOTAVAIL'
            ? `${address} is not an address of this host`
            : 'check that no other service holds the port';
      reject(new DragonflyError('DF_ERR_SERVE_CONFIG', `proxyDHCP cannot bind UDP ${address}:${port}: ${err.code ?? err.message}`, { address, port }, hint));
    };
    socket.once('error', onError);
    socket.bind({ address, port, exclusive: true }, () => {
      socket.off('error', onError);
      socket.setBroadcast(true);
      resolve(socket);
    });
  });
}

/**
 * MACs handed the iPXE binary, with the DHCP transaction (xid) that got it. Another transaction of the same
 * MAC within `windowMs` is the binary's own DHCP (a new iPXE picks a new xid); the same xid is the ROM
 * retransmitting or completing its session, which must keep getting the binary. Marked on the answer itself,
 * OFFER or ACK: behind a proxy, iPXE boots from the ProxyDHCP offer and never sends us a REQUEST.
 * Bounded so that spoofed MACs cannot grow it without limit.
 */
class ChainMemory {
  private readonly marks = new Map<string, { xid: number; at: number }>();
  constructor(private readonly windowMs: number, private readonly max = 4096, private readonly now = () => Date.now()) {}

  mark(mac: string, xid: number): void {
    this.marks.delete(mac);
    if (this.marks.size >= this.max) this.marks.delete(this.marks.keys().next().value!);
    this.marks.set(mac, { xid, at: this.now() });
  }

  /** True when `mac` got the binary in another transaction than `xid`, recently. */
  chainedBefore(mac: string, xid: number): boolean {
    const m = this.marks.get(mac);
    if (m === undefined) return false;
    if (this.now() - m.at >= this.windowMs) {
      this.marks.delete(mac);
      return false;
    }
    return m.xid !== xid;
  }
}

type LineKind = 'answer' | 'ignored' | 'malformed' | 'error';

/** A flood of hostile datagrams must not become a flood of log lines: a budget per kind, the rest counted. */
class LimitedLog {
  private readonly limiter: WindowLimiter;
  private readonly suppressed = new Map<LineKind, number>();

  constructor(private readonly log: DhcpLog | undefined, perWindow: number, private readonly stats: DhcpStats) {
    this.limiter = new WindowLimiter(perWindow, 10_000);
  }

  line(kind: LineKind, level: 'info' | 'warn' | 'debug', obj: Record<string, unknown>, msg: string): void {
    if (!this.log) return;
    if (!this.limiter.take(kind)) {
      this.suppressed.set(kind, (this.suppressed.get(kind) ?? 0) + 1);
      this.stats.suppressedLogLines++;
      return;
    }
    const skipped = this.suppressed.get(kind);
    this.suppressed.delete(kind);
    const entry = skipped ? { ...obj, suppressedBefore: skipped } : obj;
    if (level === 'debug') this.log.debug?.(entry, msg);
    else this.log[level](entry, msg);
  }

  flush(): void {
    for (const [kind, n] of this.suppressed) this.log?.info({ kind, suppressed: n }, 'proxyDHCP log lines suppressed');
    this.suppressed.clear();
  }
}

function isIpv4(ip: string): boolean {
  try {
    ipToBytes(ip);
    return true;
  } catch {
    return false;
  }
}
