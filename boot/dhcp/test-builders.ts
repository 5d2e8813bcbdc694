// Test builders for DHCP packets: the captured firmware DISCOVERs in fixtures/, requests built the way PXE
// ROMs build them, a seeded generator of hostile datagrams, and a UDP client for the server tests.
import dgram from 'node:dgram';
import fs from 'node:fs';
import {
  BOOTREQUEST,
  decodePacket,
  encodePacket,
  encodeSubOptions,
  FLAG_BROADCAST,
  ipToBytes,
  MESSAGE_TYPE,
  OPTION,
  u16Bytes,
  type DhcpPacket,
} from './packet.js';
import type { PolicyConfig } from './policy.js';

/** A captured datagram from fixtures/NAME.hex ('#' lines are comments). */
export function fixtureBytes(name: string): Buffer {
  const text = fs.readFileSync(new URL(`./fixtures/${name}.hex`, import.meta.url), 'utf8');
  return Buffer.from(text.split('\n').filter((l) => !l.startsWith('#')).join('').replace(/\s+/g, ''), 'hex');
}

export function fixturePacket(name: string): DhcpPacket {
  const d = decodePacket(fixtureBytes(name));
  if (!d.ok) throw new Error(`fixture ${name} does not decode: ${d.error.message}`);
  return d.packet;
}

export const FIXTURES = ['ipxe-rom-bios-discover', 'ovmf-efi-pxe-discover', 'ovmf-http-discover'] as const;

export const CONFIG: PolicyConfig = {
  serverIp: '10.0.0.1',
  httpUrl: 'http://10.0.0.1:8080',
  bootfiles: { bios: 'undionly.kpxe', efi64: 'ipxe.efi' },
};

export interface RequestSpec {
  type?: number;
  mac?: string;
  xid?: number;
  /** Option 60; null leaves it out. */
  vendorClass?: string | null;
  /** Option 93; null leaves it out. */
  arch?: number | null;
  /** Option 77 bytes as sent. */
  userClass?: Buffer;
  /** Adds iPXE's option 175 (features as iPXE sends them). */
  ipxe?: boolean;
  serverId?: string;
  requestedIp?: string;
  ciaddr?: string;
  giaddr?: string;
}

/**
 * A request built the way a firmware PXE ROM builds it (PXE 2.1 §2.2: 53, 57, 55, 97, 94, 93, 60), e.g. an
 * Intel-style BIOS ROM: `pxeRequest({ arch: 0, vendorClass: 'PXEClient:Arch:00000:UNDI:002001' })`.
 */
export function pxeRequest(spec: RequestSpec = {}): DhcpPacket {
  const arch = spec.arch === undefined ? 0 : spec.arch;
  const vc = spec.vendorClass === undefined ? `PXEClient:Arch:${String(arch ?? 0).padStart(5, '0')}:UNDI:002001` : spec.vendorClass;
  const options = new Map<number, Buffer>();
  options.set(OPTION.MESSAGE_TYPE, Buffer.from([spec.type ?? MESSAGE_TYPE.DISCOVER]));
  options.set(OPTION.MAX_MESSAGE_SIZE, u16Bytes(1260));
  options.set(OPTION.PARAMETER_LIST, Buffer.from([1, 2, 3, 5, 6, 11, 12, 13, 15, 16, 17, 18, 43, 54, 60, 66, 67, 128, 129, 130, 131, 132, 133, 134, 135]));
  options.set(OPTION.CLIENT_UUID, Buffer.from('00' + '4c4c4544004a3910804bb2c04f4d3232', 'hex'));
  options.set(OPTION.CLIENT_NDI, Buffer.from([1, 2, 1]));
  if (arch !== null) options.set(OPTION.CLIENT_ARCH, u16Bytes(arch));
  if (vc !== null) options.set(OPTION.VENDOR_CLASS, Buffer.from(vc, 'latin1'));
  if (spec.userClass) options.set(OPTION.USER_CLASS, spec.userClass);
  if (spec.ipxe) {
    options.set(OPTION.IPXE_ENCAP, encodeSubOptions(new Map([[177, Buffer.from('018086100e', 'hex')], [19, Buffer.from([1])], [16, Buffer.from([2])]]), false));
  }
  if (spec.serverId) options.set(OPTION.SERVER_ID, ipToBytes(spec.serverId));
  if (spec.requestedIp) options.set(OPTION.REQUESTED_IP, ipToBytes(spec.requestedIp));
  return {
    op: BOOTREQUEST,
    htype: 1,
    hlen: 6,
    hops: 0,
    xid: spec.xid ?? 0x1234abcd,
    secs: 4,
    flags: FLAG_BROADCAST,
    ciaddr: spec.ciaddr ?? '0.0.0.0',
    yiaddr: '0.0.0.0',
    siaddr: '0.0.0.0',
    giaddr: spec.giaddr ?? '0.0.0.0',
    chaddr: Buffer.concat([Buffer.from((spec.mac ?? '00:1b:21:aa:bb:cc').split(':').map((h) => parseInt(h, 16))), Buffer.alloc(10)]),
    sname: '',
    file: '',
    options,
  };
}

/** A copy of a packet with another message type, xid and (optionally) more options. */
export function withChanges(p: DhcpPacket, change: { type?: number; xid?: number; set?: Array<[number, Buffer]>; drop?: number[]; ciaddr?: string }): DhcpPacket {
  const options = new Map(p.options);
  if (change.type !== undefined) options.set(OPTION.MESSAGE_TYPE, Buffer.from([change.type]));
  for (const [k, v] of change.set ?? []) options.set(k, v);
  for (const k of change.drop ?? []) options.delete(k);
  return { ...p, xid: change.xid ?? p.xid, ciaddr: change.ciaddr ?? p.ciaddr, chaddr: Buffer.from(p.chaddr), options };
}


/**
 * Hostile datagrams: pure noise, truncations, bit flips and byte overwrites of real requests, lying option
 * lengths, overload values, long option chains. `safeForNetwork` zeroes ciaddr and giaddr so that a server
 * under test never answers to an address taken from the noise (only to the loopback sender or broadcast).
 */
export function hostileDatagram(rand: () => number, safeForNetwork: boolean): Buffer {
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(rand() * xs.length)]!;
  const int = (n: number) => Math.floor(rand() * n);
  const base = () => {
    const r = rand();
    if (r < 0.5) return fixtureBytes(pick(FIXTURES));
    return encodePacket(pxeRequest({ arch: pick([0, 6, 7, 9, 11, 16, 99]), ipxe: rand() < 0.5, type: pick([1, 3, 8]), xid: int(2 ** 32) }));
  };
  let buf: Buffer;
  switch (int(7)) {
    case 0: // noise of any length, sometimes with a valid cookie
      buf = Buffer.from(Array.from({ length: int(700) }, () => int(256)));
      if (buf.length >= 240 && rand() < 0.7) buf.writeUInt32BE(0x63825363, 236);
      break;
    case 1: // truncation
      buf = base();
      buf = buf.subarray(0, int(buf.length + 1));
      break;
    case 2: // bit flips
      buf = Buffer.from(base());
      for (let i = int(8) + 1; i > 0; i--) {
        const at = int(buf.length);
        buf[at] = buf[at]! ^ (1 << int(8));
      }
      break;
    case 3: // byte overwrites in the options area
      buf = Buffer.from(base());
      for (let i = int(12) + 1; i > 0; i--) buf[240 + int(buf.length - 240)] = int(256);
      break;
    case 4: // lying option lengths and random option chains after the cookie
    {
      const head = base().subarray(0, 240);
      const opts: number[] = [];
      for (let i = int(60); i > 0; i--) {
        const code = pick([0, 43, 52, 53, 54, 60, 77, 93, 94, 97, 175, 255, int(256)]);
        const len = rand() < 0.2 ? 255 : int(20);
        opts.push(code, len, ...Array.from({ length: rand() < 0.8 ? len : int(len + 1) }, () => int(256)));
      }
      buf = Buffer.concat([head, Buffer.from(opts)]);
      break;
    }
    case 5: // overload with garbage in sname/file
    {
      buf = Buffer.from(base());
      for (let i = 44; i < 236; i++) buf[i] = rand() < 0.5 ? int(256) : pick([0, 255, 60, 93, 2, 4]);
      buf = Buffer.concat([buf.subarray(0, 240), Buffer.from([52, 1, int(5)]), buf.subarray(240)]);
      break;
    }
    default: // header fields out of range (op, hlen), nested 43/175 garbage
    {
      buf = Buffer.from(base());
      buf[0] = pick([0, 1, 2, 3, 255]);
      buf[2] = pick([0, 6, 16, 17, 255]);
      const sub = Buffer.from(Array.from({ length: int(30) }, () => pick([0, 255, 176, 6, int(256)])));
      buf = Buffer.concat([buf.subarray(0, 240), Buffer.from([pick([43, 175]), sub.length]), sub, buf.subarray(240)]);
    }
  }
  if (safeForNetwork && buf.length >= 28) {
    buf = Buffer.from(buf);
    buf.fill(0, 12, 16);
    buf.fill(0, 24, 28);
  }
  return buf;
}

/** A UDP client bound to 0.0.0.0 on a free port: hears the server's broadcasts and unicasts. */
export async function udpClient(): Promise<{
  port: number;
  send(buf: Buffer, port: number, address?: string): Promise<void>;
  /** Resolve with the first reply whose xid is `xid` (decoded), or reject after `ms`. */
  reply(xid: number, ms?: number): Promise<{ packet: DhcpPacket; from: dgram.RemoteInfo; bytes: number }>;
  /** Every decoded reply received so far, by xid. */
  seen: Map<number, DhcpPacket[]>;
  close(): Promise<void>;
}> {
  const socket = dgram.createSocket({ type: 'udp4', reuseAddr: true });
  const seen = new Map<number, DhcpPacket[]>();
  const waiting = new Map<number, (r: { packet: DhcpPacket; from: dgram.RemoteInfo; bytes: number }) => void>();
  socket.on('message', (msg, from) => {
    const d = decodePacket(msg);
    if (!d.ok) return;
    seen.set(d.packet.xid, [...(seen.get(d.packet.xid) ?? []), d.packet]);
    waiting.get(d.packet.xid)?.({ packet: d.packet, from, bytes: msg.length });
  });
  await new Promise<void>((resolve) => socket.bind(0, '0.0.0.0', () => resolve()));
  return {
    port: socket.address().port,
    seen,
    send: (buf, port, address = '127.0.0.1') => new Promise((resolve, reject) => socket.send(buf, port, address, (e) => (e ? reject(e) : resolve()))),
    reply: (xid, ms = 5000) =>
      new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiting.delete(xid);
          reject(new Error(`no reply with xid ${xid.toString(16)} within ${ms} ms`));
        }, ms);
        waiting.set(xid, (r) => {
          clearTimeout(timer);
          waiting.delete(xid);
          resolve(r);
        });
        const already = seen.get(xid)?.[0];
        if (already) waiting.get(xid)!({ packet: already, from: { address: '', family: 'IPv4', port: 0, size: 0 }, bytes: 0 });
      }),
    close: () => new Promise((resolve) => socket.close(() => resolve())),
  };
}

/** Poll until `check` returns true (no fixed sleeps in assertions); throws after `ms`. */
export async function until(check: () => boolean, ms: number, what: string, everyMs = 20): Promise<void> {
  const end = Date.now() + ms;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
