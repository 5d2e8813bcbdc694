// TEST-ONLY: a tiny address pool for `startProxyDhcp({ mode: 'full' })`, so that a network-namespace test
// can PXE boot a VM where no other DHCP server exists. Dragonfly in production is a proxyDHCP: it never
// leases addresses. This pool keeps leases in memory only, never probes for conflicts (no ping, no ARP),
// ignores expiry and is sized for a handful of VMs; never point it at a real network.
import { ipToBytes, u32Bytes, OPTION } from './packet.js';

export interface TestPoolConfig {
  /** First and last address handed out, inclusive, e.g. 192.168.77.100 .. 192.168.77.150. */
  start: string;
  end: string;
  subnetMask: string;
  /** Option 3, when the clients need one. */
  router?: string;
  /** Option 51 (default 3600). */
  leaseSeconds?: number;
}

export type RequestOutcome = { ack: string } | { nak: string };

export class TestLeasePool {
  private readonly byMac = new Map<string, number>();
  private readonly byIp = new Map<number, string>();
  private readonly first: number;
  private readonly last: number;

  constructor(readonly config: TestPoolConfig) {
    this.first = toInt(config.start);
    this.last = toInt(config.end);
    ipToBytes(config.subnetMask);
    if (config.router) ipToBytes(config.router);
    if (this.last < this.first || this.last - this.first > 4096) throw new RangeError(`pool ${config.start}..${config.end} is empty or larger than 4096 addresses`);
  }

  /** The address offered to a MAC: its current lease, else the lowest free one; undefined when exhausted. */
  offer(mac: string): string | undefined {
    const have = this.byMac.get(mac);
    if (have !== undefined) return toIp(have);
    for (let n = this.first; n <= this.last; n++) {
      if (!this.byIp.has(n)) {
        this.bind(mac, n);
        return toIp(n);
      }
    }
    return undefined;
  }

  /** RFC 2131 §4.3.2: ACK the address the client asks for if it is (or can be) its lease, else NAK. */
  request(mac: string, requested: string | undefined): RequestOutcome {
    const want = requested === undefined ? undefined : toIntOrUndefined(requested);
    const have = this.byMac.get(mac);
    if (want === undefined) return have === undefined ? { nak: 'no address requested and no lease' } : { ack: toIp(have) };
    if (have === want) return { ack: toIp(want) };
    const holder = this.byIp.get(want);
    if (want < this.first || want > this.last || (holder !== undefined && holder !== mac)) return { nak: `${requested} is not available` };
    if (have !== undefined) this.byIp.delete(have);
    this.bind(mac, want);
    return { ack: toIp(want) };
  }

  release(mac: string): void {
    const have = this.byMac.get(mac);
    if (have === undefined) return;
    this.byMac.delete(mac);
    this.byIp.delete(have);
  }

  get size(): number {
    return this.byMac.size;
  }

  /** The lease options of an OFFER or ACK: 51 lease time, 1 subnet mask, 3 router. */
  leaseOptions(): Array<[number, Buffer]> {
    const out: Array<[number, Buffer]> = [
      [OPTION.LEASE_TIME, u32Bytes(this.config.leaseSeconds ?? 3600)],
      [OPTION.SUBNET_MASK, ipToBytes(this.config.subnetMask)],
    ];
    if (this.config.router) out.push([OPTION.ROUTER, ipToBytes(this.config.router)]);
    return out;
  }

  private bind(mac: string, n: number): void {
    this.byMac.set(mac, n);
    this.byIp.set(n, mac);
  }
}

function toInt(ip: string): number {
  return ipToBytes(ip).readUInt32BE(0);
}

function toIntOrUndefined(ip: string): number | undefined {
  try {
    return toInt(ip);
  } catch {
    return undefined;
  }
}

function toIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}
