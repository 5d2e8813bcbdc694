// BOOTP/DHCP packets: pure encode and decode. RFC 2131 §2 (header), RFC 2132 (options, incl. pad, end and
// §9.3 overload), RFC 3396 (an option split over several instances is their concatenation), PXE 2.1 option 43,
// iPXE's option 175, RFC 3004 user class (77), RFC 4578 client arch (93), NDI (94) and UUID/GUID (97).
// Decoding is total: any datagram yields either a packet or a typed DecodeError, never an exception, and
// every read is bounds-checked against the datagram.

export const BOOTREQUEST = 1;
export const BOOTREPLY = 2;
/** RFC 2131 §3: the magic cookie 99.130.83.99 in front of the options. */
export const MAGIC_COOKIE = 0x63825363;
/** RFC 2131 §2: op .. file, before the magic cookie. */
export const HEADER_LENGTH = 236;
/** RFC 1542 §3.1.1 / RFC 951: some BOOTP relays and ROMs drop replies shorter than a BOOTP packet. */
export const MIN_PACKET_LENGTH = 300;
/** RFC 2131 §2 flags: the B bit asks for broadcast replies. */
export const FLAG_BROADCAST = 0x8000;

/** RFC 2132 §9.6 option 53 values. */
export const MESSAGE_TYPE = {
  DISCOVER: 1,
  OFFER: 2,
  REQUEST: 3,
  DECLINE: 4,
  ACK: 5,
  NAK: 6,
  RELEASE: 7,
  INFORM: 8,
} as const;

export const OPTION = {
  PAD: 0,
  SUBNET_MASK: 1,
  ROUTER: 3,
  VENDOR_OPTIONS: 43,
  REQUESTED_IP: 50,
  LEASE_TIME: 51,
  OVERLOAD: 52,
  MESSAGE_TYPE: 53,
  SERVER_ID: 54,
  PARAMETER_LIST: 55,
  MAX_MESSAGE_SIZE: 57,
  VENDOR_CLASS: 60,
  CLIENT_ID: 61,
  TFTP_SERVER: 66,
  BOOTFILE: 67,
  USER_CLASS: 77,
  CLIENT_ARCH: 93,
  CLIENT_NDI: 94,
  CLIENT_UUID: 97,
  IPXE_ENCAP: 175,
  END: 255,
} as const;

/** PXE 2.1 §2.4.4 vendor options carried in option 43 when option 60 is "PXEClient". */
export const PXE_SUBOPTION = {
  /** Bit 3 (8): boot the file named in the offer, without boot-server discovery or a menu. */
  DISCOVERY_CONTROL: 6,
  BOOT_SERVERS: 8,
  BOOT_MENU: 9,
  MENU_PROMPT: 10,
  BOOT_ITEM: 71,
} as const;

/** iPXE's encapsulated options in option 175 (iPXE include/ipxe/dhcp.h, DHCP_EB_*). */
export const IPXE_SUBOPTION = {
  /** Feature indicator: HTTP supported. */
  HTTP: 19,
  /** 1: do not wait for ProxyDHCP offers (saves iPXE's ProxyDHCP wait when there is no proxy). */
  NO_PXEDHCP: 176,
  BUS_ID: 177,
} as const;

/** RFC 4578 §2.1 / IANA "Processor Architecture Types" values used by PXE and UEFI HTTP boot. */
export const CLIENT_ARCH = {
  X86_BIOS: 0,
  EFI_IA32: 6,
  EFI_BC: 7,
  EFI_X86_64: 9,
  EFI_ARM32: 10,
  EFI_ARM64: 11,
  EFI_X86_HTTP: 15,
  EFI_X86_64_HTTP: 16,
  EFI_ARM32_HTTP: 18,
  EFI_ARM64_HTTP: 19,
} as const;

export interface DhcpPacket {
  op: number;
  htype: number;
  hlen: number;
  hops: number;
  xid: number;
  secs: number;
  flags: number;
  ciaddr: string;
  yiaddr: string;
  siaddr: string;
  giaddr: string;
  /** All 16 bytes of chaddr; the hardware address is the first `hlen` of them. */
  chaddr: Buffer;
  /** Up to the first NUL; '' when the field carries options (overload). */
  sname: string;
  /** Up to the first NUL; '' when the field carries options (overload). */
  file: string;
  /**
   * Options by code, in first-seen order. Each value is the concatenation of every instance of the code
   * (RFC 3396 §5), from the options field, then `file`, then `sname` when overloaded (RFC 2131 §4.1).
   * Pad, end and the overload option itself are consumed by the decoder and never appear here.
   */
  options: Map<number, Buffer>;
}

export type DecodeErrorReason =
  | 'too-short'
  | 'not-dhcp'
  | 'bad-header'
  | 'truncated-option'
  | 'bad-overload'
  | 'bad-option';

export interface DecodeError {
  reason: DecodeErrorReason;
  message: string;
  /** Byte offset in the datagram where decoding stopped, when there is one. */
  offset?: number;
  /** The option code concerned, for truncated-option and bad-option. */
  option?: number;
}

export type DecodeResult = { ok: true; packet: DhcpPacket } | { ok: false; error: DecodeError };

/** Decode one datagram. Total: malformed input returns `{ ok: false }`. */
export function decodePacket(buf: Uint8Array): DecodeResult {
  if (buf.length < HEADER_LENGTH + 4) {
    return fail('too-short', `datagram of ${buf.length} bytes is shorter than a BOOTP header and magic cookie (240)`);
  }
  const op = buf[0]!;
  const hlen = buf[2]!;
  if (op !== BOOTREQUEST && op !== BOOTREPLY) return fail('bad-header', `op ${op} is neither BOOTREQUEST nor BOOTREPLY`, 0);
  if (hlen > 16) return fail('bad-header', `hlen ${hlen} exceeds the 16-byte chaddr field`, 2);
  // Plain BOOTP (no cookie) carries no message type; PXE and everything Dragonfly answers is DHCP.
  if (u32(buf, HEADER_LENGTH) !== MAGIC_COOKIE) return fail('not-dhcp', 'no DHCP magic cookie at offset 236', HEADER_LENGTH);

  const parts = new Map<number, Buffer[]>();
  const main = readOptionArea(buf, HEADER_LENGTH + 4, buf.length, parts);
  if (main) return { ok: false, error: main };

  // RFC 2132 §9.3: option 52 says whether `file` (1), `sname` (2) or both (3) hold more options.
  const overloadParts = parts.get(OPTION.OVERLOAD);
  parts.delete(OPTION.OVERLOAD);
  let overload = 0;
  if (overloadParts) {
    const value = Buffer.concat(overloadParts);
    if (value.length !== 1 || value[0]! < 1 || value[0]! > 3) {
      return fail('bad-overload', `option 52 must be one byte 1, 2 or 3, got ${value.length} bytes`, undefined, OPTION.OVERLOAD);
    }
    overload = value[0]!;
  }
  // RFC 2131 §4.1: options field first, then file, then sname. Option 52 inside them is meaningless: dropped.
  if (overload & 1) {
    const err = readOptionArea(buf, 108, 236, parts);
    if (err) return { ok: false, error: err };
  }
  if (overload & 2) {
    const err = readOptionArea(buf, 44, 108, parts);
    if (err) return { ok: false, error: err };
  }
  parts.delete(OPTION.OVERLOAD);

  const options = new Map<number, Buffer>();
  for (const [code, chunks] of parts) options.set(code, Buffer.concat(chunks));

  return {
    ok: true,
    packet: {
      op,
      htype: buf[1]!,
      hlen,
      hops: buf[3]!,
      xid: u32(buf, 4),
      secs: u16(buf, 8),
      flags: u16(buf, 10),
      ciaddr: ipAt(buf, 12),
      yiaddr: ipAt(buf, 16),
      siaddr: ipAt(buf, 20),
      giaddr: ipAt(buf, 24),
      chaddr: Buffer.from(buf.subarray(28, 44)),
      sname: overload & 2 ? '' : cStringAt(buf, 44, 108),
      file: overload & 1 ? '' : cStringAt(buf, 108, 236),
      options,
    },
  };
}

// RFC 2132 §2: code, length, value; pad (0) and end (255) are single bytes. Reaching the end of the area
// without an end option is tolerated (some ROMs omit it); a length running past the area is not.
function readOptionArea(buf: Uint8Array, start: number, end: number, into: Map<number, Buffer[]>): DecodeError | undefined {
  let i = start;
  while (i < end) {
    const code = buf[i]!;
    if (code === OPTION.PAD) {
      i += 1;
      continue;
    }
    if (code === OPTION.END) return undefined;
    if (i + 1 >= end) return { reason: 'truncated-option', message: `option ${code} has no length byte`, offset: i, option: code };
    const len = buf[i + 1]!;
    if (i + 2 + len > end) {
      return { reason: 'truncated-option', message: `option ${code} claims ${len} bytes but ${end - i - 2} remain`, offset: i, option: code };
    }
    const chunk = Buffer.from(buf.subarray(i + 2, i + 2 + len));
    const list = into.get(code);
    if (list) list.push(chunk);
    else into.set(code, [chunk]);
    i += 2 + len;
  }
  return undefined;
}

/**
 * Encode a packet. Options go in the options field only (never overloaded), each value split into
 * 255-byte instances (RFC 3396), option 53 first, then in map order, then end; padded to `minLength`.
 * Throws RangeError only for programming errors (an option code outside 1..254, a field that does not fit).
 */
export function encodePacket(p: DhcpPacket, minLength = MIN_PACKET_LENGTH): Buffer {
  const header = Buffer.alloc(HEADER_LENGTH + 4);
  header.writeUInt8(p.op, 0);
  header.writeUInt8(p.htype, 1);
  header.writeUInt8(p.hlen, 2);
  header.writeUInt8(p.hops, 3);
  header.writeUInt32BE(p.xid >>> 0, 4);
  header.writeUInt16BE(p.secs, 8);
  header.writeUInt16BE(p.flags, 10);
  ipToBytes(p.ciaddr).copy(header, 12);
  ipToBytes(p.yiaddr).copy(header, 16);
  ipToBytes(p.siaddr).copy(header, 20);
  ipToBytes(p.giaddr).copy(header, 24);
  if (p.chaddr.length > 16) throw new RangeError(`chaddr of ${p.chaddr.length} bytes does not fit 16`);
  p.chaddr.copy(header, 28);
  writeField(header, p.sname, 44, 64, 'sname');
  writeField(header, p.file, 108, 128, 'file');
  header.writeUInt32BE(MAGIC_COOKIE, HEADER_LENGTH);

  const codes = [...p.options.keys()].sort((a, b) => Number(b === OPTION.MESSAGE_TYPE) - Number(a === OPTION.MESSAGE_TYPE));
  const body = Buffer.concat([...codes.map((code) => encodeOption(code, p.options.get(code)!)), Buffer.from([OPTION.END])]);
  const packet = Buffer.concat([header, body]);
  return packet.length >= minLength ? packet : Buffer.concat([packet, Buffer.alloc(minLength - packet.length)]);
}

/** One option as code/length/value instances: RFC 3396 §7 splits values longer than 255 bytes. */
function encodeOption(code: number, value: Uint8Array): Buffer {
  if (!Number.isInteger(code) || code < 1 || code > 254) throw new RangeError(`option code ${code} is not 1..254`);
  const out: Buffer[] = [];
  let pos = 0;
  do {
    const chunk = value.subarray(pos, pos + 255);
    out.push(Buffer.from([code, chunk.length]), Buffer.from(chunk));
    pos += 255;
  } while (pos < value.length);
  return Buffer.concat(out);
}

function writeField(header: Buffer, text: string, offset: number, size: number, name: string): void {
  const bytes = Buffer.from(text, 'latin1');
  if (bytes.length > size) throw new RangeError(`${name} of ${bytes.length} bytes does not fit ${size}`);
  bytes.copy(header, offset);
}

// ---- encapsulated options (43, 175) ----

export type SubOptionsResult = { ok: true; options: Map<number, Buffer> } | { ok: false; error: DecodeError };

/** Decode vendor-encapsulated options (PXE's 43, iPXE's 175): the same code/length/value form with pad and end. */
export function decodeSubOptions(value: Uint8Array, parent: number): SubOptionsResult {
  const parts = new Map<number, Buffer[]>();
  const err = readOptionArea(value, 0, value.length, parts);
  if (err) return { ok: false, error: { reason: 'bad-option', message: `option ${parent}: ${err.message}`, option: parent } };
  const options = new Map<number, Buffer>();
  for (const [code, chunks] of parts) options.set(code, Buffer.concat(chunks));
  return { ok: true, options };
}

/** Encode encapsulated options; `end` appends the end option (PXE 2.1 requires it in option 43). */
export function encodeSubOptions(options: ReadonlyMap<number, Uint8Array>, end: boolean): Buffer {
  const parts = [...options].map(([code, value]) => {
    if (value.length > 255) throw new RangeError(`sub-option ${code} of ${value.length} bytes does not fit 255`);
    return encodeOption(code, value);
  });
  return Buffer.concat(end ? [...parts, Buffer.from([OPTION.END])] : parts);
}

// ---- typed readers of the options a PXE request carries ----

/** What a client says about itself, read from its options. */
export interface ClientInfo {
  /** chaddr's first hlen bytes, lower-case hex separated by ':'. */
  mac: string;
  /** Option 53; undefined for plain BOOTP. */
  messageType: number | undefined;
  /** Option 60, e.g. "PXEClient:Arch:00000:UNDI:002001" or "HTTPClient:Arch:00016:UNDI:003000". */
  vendorClass: string | undefined;
  /** Option 77: RFC 3004 instances, or iPXE's plain string ("iPXE") as one. */
  userClasses: string[];
  /** Option 93 (RFC 4578 §2.1): one 16-bit type per supported architecture; usually one. */
  archs: number[];
  /** Option 94 (RFC 4578 §2.2) when well-formed: type 1 = UNDI, with its version. */
  ndi: { type: number; major: number; minor: number } | undefined;
  /** Option 97 (RFC 4578 §2.3) when well-formed: type 0 and 16 bytes of GUID, as hex. */
  uuid: string | undefined;
  /** Option 97 exactly as sent, whatever its shape (for logs); replies echo it only when `uuid` is set. */
  uuidRaw: Buffer | undefined;
  /** Option 175, iPXE's encapsulated options (their presence says "this is iPXE"). */
  ipxe: Map<number, Buffer> | undefined;
  /** Option 43 (PXE vendor options) as sent by the client. */
  vendorOptions: Map<number, Buffer> | undefined;
  /** Option 54. */
  serverId: string | undefined;
  /** Option 50. */
  requestedIp: string | undefined;
  /** Option 57. */
  maxMessageSize: number | undefined;
}

export type ClientInfoResult = { ok: true; info: ClientInfo } | { ok: false; error: DecodeError };

/**
 * Read the options a PXE decision needs, checking each one's shape. Total. Options the decision depends on
 * (53, 93, 50, 54, 57, 43, 175) make the request malformed when misshapen; 94 and 97 are informational and
 * ROMs in the field get them subtly wrong, so a bad shape only leaves them undefined.
 */
export function readClientInfo(p: DhcpPacket): ClientInfoResult {
  const o = p.options;
  const bad = (option: number, message: string): ClientInfoResult => ({
    ok: false,
    error: { reason: 'bad-option', message: `option ${option}: ${message}`, option },
  });

  const mt = o.get(OPTION.MESSAGE_TYPE);
  if (mt && mt.length !== 1) return bad(OPTION.MESSAGE_TYPE, `message type must be 1 byte, got ${mt.length}`);

  const archRaw = o.get(OPTION.CLIENT_ARCH);
  const archs: number[] = [];
  if (archRaw) {
    if (archRaw.length === 0 || archRaw.length % 2 !== 0) return bad(OPTION.CLIENT_ARCH, `expected a list of 16-bit types, got ${archRaw.length} bytes`);
    for (let i = 0; i < archRaw.length; i += 2) archs.push(u16(archRaw, i));
  }

  const ips: Record<'serverId' | 'requestedIp', string | undefined> = { serverId: undefined, requestedIp: undefined };
  for (const [key, code] of [
    ['serverId', OPTION.SERVER_ID],
    ['requestedIp', OPTION.REQUESTED_IP],
  ] as const) {
    const v = o.get(code);
    if (v === undefined) continue;
    if (v.length !== 4) return bad(code, `an IPv4 address is 4 bytes, got ${v.length}`);
    ips[key] = ipAt(v, 0);
  }

  const mms = o.get(OPTION.MAX_MESSAGE_SIZE);
  if (mms && mms.length !== 2) return bad(OPTION.MAX_MESSAGE_SIZE, `maximum message size is 2 bytes, got ${mms.length}`);

  let vendorOptions: Map<number, Buffer> | undefined;
  const vo = o.get(OPTION.VENDOR_OPTIONS);
  if (vo) {
    const r = decodeSubOptions(vo, OPTION.VENDOR_OPTIONS);
    if (!r.ok) return { ok: false, error: r.error };
    vendorOptions = r.options;
  }
  let ipxe: Map<number, Buffer> | undefined;
  const ie = o.get(OPTION.IPXE_ENCAP);
  if (ie) {
    const r = decodeSubOptions(ie, OPTION.IPXE_ENCAP);
    if (!r.ok) return { ok: false, error: r.error };
    ipxe = r.options;
  }

  const ndiRaw = o.get(OPTION.CLIENT_NDI);
  const uuidRaw = o.get(OPTION.CLIENT_UUID);
  const vc = o.get(OPTION.VENDOR_CLASS);
  const uc = o.get(OPTION.USER_CLASS);
  return {
    ok: true,
    info: {
      mac: macOf(p),
      messageType: mt?.[0],
      vendorClass: vc ? vc.toString('latin1') : undefined,
      userClasses: uc ? decodeUserClass(uc) : [],
      archs,
      ndi: ndiRaw && ndiRaw.length === 3 ? { type: ndiRaw[0]!, major: ndiRaw[1]!, minor: ndiRaw[2]! } : undefined,
      uuid: uuidRaw && uuidRaw.length === 17 && uuidRaw[0] === 0 ? uuidRaw.subarray(1).toString('hex') : undefined,
      uuidRaw,
      ipxe,
      vendorOptions,
      serverId: ips.serverId,
      requestedIp: ips.requestedIp,
      maxMessageSize: mms ? u16(mms, 0) : undefined,
    },
  };
}

/**
 * Option 77. RFC 3004 §4 wants length-prefixed instances (`[4]iPXE`); iPXE and many ROMs send one plain
 * string (`iPXE`). The value is read as RFC 3004 only when its instances cover it exactly, each non-empty.
 */
export function decodeUserClass(value: Uint8Array): string[] {
  const out: string[] = [];
  let i = 0;
  while (i < value.length) {
    const len = value[i]!;
    if (len === 0 || i + 1 + len > value.length) return value.length ? [Buffer.from(value).toString('latin1')] : [];
    out.push(Buffer.from(value.subarray(i + 1, i + 1 + len)).toString('latin1'));
    i += 1 + len;
  }
  return out;
}

/** RFC 3004 §4 form of a user class list. */
export function encodeUserClass(classes: readonly string[]): Buffer {
  return Buffer.concat(
    classes.map((c) => {
      const b = Buffer.from(c, 'latin1');
      if (b.length < 1 || b.length > 255) throw new RangeError(`user class of ${b.length} bytes is not 1..255`);
      return Buffer.concat([Buffer.from([b.length]), b]);
    }),
  );
}

/** The hardware address: chaddr's first hlen bytes (at most 16), lower-case hex separated by ':'. */
export function macOf(p: Pick<DhcpPacket, 'chaddr' | 'hlen'>): string {
  return [...p.chaddr.subarray(0, Math.min(p.hlen, 16))].map((b) => b.toString(16).padStart(2, '0')).join(':');
}

/** `a.b.c.d` → 4 bytes. Throws RangeError for anything that is not a dotted-quad IPv4 address. */
export function ipToBytes(ip: string): Buffer {
  const parts = ip.split('.');
  if (parts.length !== 4 || parts.some((x) => !/^\d{1,3}$/.test(x) || Number(x) > 255)) throw new RangeError(`${JSON.stringify(ip)} is not an IPv4 address`);
  return Buffer.from(parts.map(Number));
}

export function u32Bytes(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n >>> 0, 0);
  return b;
}

export function u16Bytes(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n & 0xffff, 0);
  return b;
}

const u16 = (b: Uint8Array, o: number) => (b[o]! << 8) | b[o + 1]!;
const u32 = (b: Uint8Array, o: number) => ((b[o]! << 24) | (b[o + 1]! << 16) | (b[o + 2]! << 8) | b[o + 3]!) >>> 0;
const ipAt = (b: Uint8Array, o: number) => `${b[o]}.${b[o + 1]}.${b[o + 2]}.${b[o + 3]}`;

function cStringAt(buf: Uint8Array, start: number, end: number): string {
  const nul = buf.subarray(start, end).indexOf(0);
  return Buffer.from(buf.subarray(start, nul === -1 ? end : start + nul)).toString('latin1');
}

function fail(reason: DecodeErrorReason, message: string, offset?: number, option?: number): DecodeResult {
  return {
    ok: false,
    error: { reason, message, ...(offset === undefined ? {} : { offset }), ...(option === undefined ? {} : { option }) },
  };
}
