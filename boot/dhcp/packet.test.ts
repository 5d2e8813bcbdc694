import { describe, expect, it } from 'vitest';
import {
  decodePacket,
  decodeSubOptions,
  decodeUserClass,
  encodePacket,
  encodeSubOptions,
  encodeUserClass,
  FLAG_BROADCAST,
  MAGIC_COOKIE,
  MESSAGE_TYPE,
  OPTION,
  readClientInfo,
  type DhcpPacket,
} from './packet.js';
import { decide } from './policy.js';
import { CONFIG, FIXTURES, fixtureBytes, fixturePacket, hostileDatagram, pxeRequest } from './test-builders.js';
import { prng } from '../../test/prng.js';

const decodeOk = (buf: Uint8Array): DhcpPacket => {
  const d = decodePacket(buf);
  if (!d.ok) throw new Error(`expected a packet, got ${d.error.reason}: ${d.error.message}`);
  return d.packet;
};
const decodeErr = (buf: Uint8Array) => {
  const d = decodePacket(buf);
  if (d.ok) throw new Error('expected a decode error');
  return d.error;
};
const opts = (p: DhcpPacket) => Object.fromEntries([...p.options].map(([k, v]) => [k, v.toString('hex')]));

/** A bare DISCOVER header + cookie, then `tail` as the options area. */
function raw(tail: number[], header: (b: Buffer) => void = () => {}): Buffer {
  const b = Buffer.alloc(240);
  b[0] = 1;
  b[1] = 1;
  b[2] = 6;
  b.writeUInt32BE(MAGIC_COOKIE, 236);
  header(b);
  return Buffer.concat([b, Buffer.from(tail)]);
}

describe('decoding captured firmware requests', () => {
  it('reads the iPXE ROM DISCOVER: BIOS arch, user class iPXE, option 175 features', () => {
    const p = fixturePacket('ipxe-rom-bios-discover');
    expect(p).toMatchObject({ op: 1, htype: 1, hlen: 6, ciaddr: '0.0.0.0', giaddr: '0.0.0.0', sname: '', file: '' });
    const r = readClientInfo(p);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.info).toMatchObject({
      mac: '52:54:00:df:00:01',
      messageType: MESSAGE_TYPE.DISCOVER,
      vendorClass: 'PXEClient:Arch:00000:UNDI:002001',
      userClasses: ['iPXE'],
      archs: [0],
      ndi: { type: 1, major: 2, minor: 1 },
      uuid: '00000000000000000000000000000000',
      maxMessageSize: 1472,
    });
    expect(r.info.uuidRaw?.length).toBe(17);
    expect(r.info.ipxe?.get(177)?.toString('hex')).toBe('018086100e'); // bus id: PCI 8086:100e (e1000)
    expect(r.info.ipxe?.get(19)).toEqual(Buffer.from([1])); // HTTP feature
  });

  it('reads OVMF UEFI PXE (arch 7) and UEFI HTTP boot (arch 16) DISCOVERs', () => {
    const pxe = readClientInfo(fixturePacket('ovmf-efi-pxe-discover'));
    const http = readClientInfo(fixturePacket('ovmf-http-discover'));
    expect(pxe.ok && http.ok).toBe(true);
    if (!pxe.ok || !http.ok) return;
    expect(pxe.info).toMatchObject({ mac: '52:54:00:df:00:02', archs: [7], vendorClass: 'PXEClient:Arch:00007:UNDI:003000', userClasses: [], ipxe: undefined });
    expect(http.info).toMatchObject({ archs: [16], vendorClass: 'HTTPClient:Arch:00016:UNDI:003000', ndi: { type: 1, major: 3, minor: 0 } });
    expect(fixturePacket('ovmf-http-discover').flags).toBe(FLAG_BROADCAST);
  });
});

describe('encoding', () => {
  it('round-trips every captured request byte-for-byte in meaning', () => {
    for (const name of FIXTURES) {
      const p = fixturePacket(name);
      const again = decodeOk(encodePacket(p));
      expect(again, name).toEqual(p);
    }
  });

  it('writes option 53 first, ends with option 255, and pads a short packet to 300 bytes', () => {
    const p = pxeRequest();
    const b = encodePacket(p);
    expect([...b.subarray(240, 243)]).toEqual([53, 1, MESSAGE_TYPE.DISCOVER]);
    expect(b[b.length - 1]).toBe(255); // 337 bytes of request: no padding needed
    expect(decodeOk(b)).toEqual(p);
    const small = encodePacket({ ...p, options: new Map([[OPTION.MESSAGE_TYPE, Buffer.from([1])]]) });
    expect(small.length).toBe(300);
    expect([...small.subarray(240, 244)]).toEqual([53, 1, 1, 255]);
    expect(small.subarray(244).every((x) => x === 0)).toBe(true);
  });

  it('splits a value longer than 255 bytes into instances and decodes their concatenation (RFC 3396)', () => {
    const long = Buffer.from(Array.from({ length: 600 }, (_, i) => i % 251));
    const p = pxeRequest();
    p.options.set(OPTION.VENDOR_OPTIONS, long);
    const b = encodePacket(p);
    // Walk the options area: three instances of 43 (255 + 255 + 90 bytes).
    const lengths: number[] = [];
    for (let i = 240; i < b.length && b[i] !== 255; i += b[i] === 0 ? 1 : 2 + b[i + 1]!) if (b[i] === 43) lengths.push(b[i + 1]!);
    expect(lengths).toEqual([255, 255, 90]);
    expect(decodeOk(b).options.get(OPTION.VENDOR_OPTIONS)).toEqual(long);
  });

  it('refuses programming errors loudly: option code 0 or 255, a file name longer than the field', () => {
    const p = pxeRequest();
    expect(() => encodePacket({ ...p, options: new Map([[0, Buffer.alloc(1)]]) })).toThrow(RangeError);
    expect(() => encodePacket({ ...p, options: new Map([[255, Buffer.alloc(1)]]) })).toThrow(RangeError);
    expect(() => encodePacket({ ...p, file: 'x'.repeat(129) })).toThrow(RangeError);
  });
});

describe('options area (RFC 2132)', () => {
  it('skips pad, stops at end, and tolerates a missing end option', () => {
    const p = decodeOk(raw([0, 0, 53, 1, 1, 0, 60, 3, 0x61, 0x62, 0x63, 255, 93, 2, 0, 0]));
    expect(opts(p)).toEqual({ 53: '01', 60: '616263' });
    expect(opts(decodeOk(raw([53, 1, 3])))).toEqual({ 53: '03' });
  });

  it('concatenates repeated instances of one option (RFC 3396 §5)', () => {
    expect(opts(decodeOk(raw([60, 2, 0x50, 0x58, 53, 1, 1, 60, 1, 0x45, 255])))).toEqual({ 60: '505845', 53: '01' });
  });

  it('reads options from file and sname when option 52 overloads them, in the order options, file, sname', () => {
    const b = raw([52, 1, 3, 60, 1, 0x41, 255], (h) => {
      Buffer.from([60, 1, 0x42, 67, 3, 0x61, 0x62, 0x63, 255]).copy(h, 108); // file
      Buffer.from([60, 1, 0x43, 66, 2, 0x78, 0x79, 255]).copy(h, 44); // sname
    });
    const p = decodeOk(b);
    expect(p.sname).toBe('');
    expect(p.file).toBe('');
    expect(p.options.get(OPTION.VENDOR_CLASS)?.toString()).toBe('ABC');
    expect(p.options.get(OPTION.BOOTFILE)?.toString()).toBe('abc');
    expect(p.options.get(OPTION.TFTP_SERVER)?.toString()).toBe('xy');
    expect(p.options.has(OPTION.OVERLOAD)).toBe(false);
  });

  it('keeps file and sname as strings when they are not overloaded', () => {
    const p = decodeOk(raw([53, 1, 1, 255], (h) => {
      h.write('boot.example', 44, 'latin1');
      h.write('undionly.kpxe', 108, 'latin1');
    }));
    expect(p.sname).toBe('boot.example');
    expect(p.file).toBe('undionly.kpxe');
  });
});

describe('malformed input gives a typed error, never an exception', () => {
  it.each([
    ['empty', Buffer.alloc(0), 'too-short'],
    ['239 bytes', Buffer.alloc(239), 'too-short'],
    ['no magic cookie (plain BOOTP)', raw([53, 1, 1], (h) => h.writeUInt32BE(0, 236)), 'not-dhcp'],
    ['op 3', raw([53, 1, 1], (h) => (h[0] = 3)), 'bad-header'],
    ['hlen 17', raw([53, 1, 1], (h) => (h[2] = 17)), 'bad-header'],
    ['option without a length byte', raw([53, 1, 1, 60]), 'truncated-option'],
    ['length past the end', raw([53, 1, 1, 60, 9, 0x41]), 'truncated-option'],
    ['overload value 4', raw([52, 1, 4, 255]), 'bad-overload'],
    ['overload of 2 bytes', raw([52, 2, 1, 1, 255]), 'bad-overload'],
    ['overloaded file with a truncated option', raw([52, 1, 1, 255], (h) => h.fill(60, 108, 236)), 'truncated-option'],
  ] as const)('%s → %s', (_name, buf, reason) => {
    const e = decodeErr(buf);
    expect(e.reason).toBe(reason);
    expect(e.message.length).toBeGreaterThan(5);
  });

  it('says where: the offset and option of a truncated option', () => {
    expect(decodeErr(raw([53, 1, 1, 0, 60, 9, 0x41]))).toMatchObject({ reason: 'truncated-option', option: 60, offset: 244 });
  });

  it('readClientInfo rejects misshapen options the decision depends on', () => {
    const bad = (code: number, value: number[]) => {
      const p = pxeRequest();
      p.options.set(code, Buffer.from(value));
      const r = readClientInfo(p);
      return r.ok ? undefined : r.error;
    };
    expect(bad(OPTION.MESSAGE_TYPE, [1, 1])).toMatchObject({ reason: 'bad-option', option: 53 });
    expect(bad(OPTION.CLIENT_ARCH, [0])).toMatchObject({ reason: 'bad-option', option: 93 });
    expect(bad(OPTION.CLIENT_ARCH, [])).toMatchObject({ reason: 'bad-option', option: 93 });
    expect(bad(OPTION.SERVER_ID, [10, 0, 0])).toMatchObject({ reason: 'bad-option', option: 54 });
    expect(bad(OPTION.MAX_MESSAGE_SIZE, [5])).toMatchObject({ reason: 'bad-option', option: 57 });
    expect(bad(OPTION.IPXE_ENCAP, [176, 5, 1])).toMatchObject({ reason: 'bad-option', option: 175 });
    expect(bad(OPTION.VENDOR_OPTIONS, [6])).toMatchObject({ reason: 'bad-option', option: 43 });
  });

  it('readClientInfo keeps odd 94/97 as raw bytes instead of refusing the client', () => {
    const p = pxeRequest();
    p.options.set(OPTION.CLIENT_UUID, Buffer.from([1, 2, 3]));
    p.options.set(OPTION.CLIENT_NDI, Buffer.from([1]));
    const r = readClientInfo(p);
    expect(r.ok && { uuid: r.info.uuid, ndi: r.info.ndi, raw: r.info.uuidRaw?.toString('hex') }).toEqual({ uuid: undefined, ndi: undefined, raw: '010203' });
  });
});

describe('encapsulated and list options', () => {
  it('option 77: iPXE plain string and RFC 3004 length-prefixed instances', () => {
    expect(decodeUserClass(Buffer.from('iPXE'))).toEqual(['iPXE']);
    expect(decodeUserClass(encodeUserClass(['iPXE', 'dragonfly']))).toEqual(['iPXE', 'dragonfly']);
    expect(decodeUserClass(Buffer.from([4, 0x69, 0x50, 0x58, 0x45]))).toEqual(['iPXE']);
    // An instance of length 0 or running past the end is not RFC 3004: the whole value is one string.
    expect(decodeUserClass(Buffer.from([0, 0x41]))).toEqual(['\0A']);
    expect(decodeUserClass(Buffer.from([9, 0x41]))).toEqual(['\tA']);
    expect(decodeUserClass(Buffer.alloc(0))).toEqual([]);
  });

  it('option 43 and 175: sub-options with pad and end', () => {
    const pxe = encodeSubOptions(new Map([[6, Buffer.from([8])]]), true);
    expect([...pxe]).toEqual([6, 1, 8, 255]);
    const r = decodeSubOptions(Buffer.from([0, 6, 1, 8, 255, 9, 9]), 43);
    expect(r.ok && [...r.options]).toEqual([[6, Buffer.from([8])]]);
    expect([...encodeSubOptions(new Map([[176, Buffer.from([1])]]), false)]).toEqual([176, 1, 1]);
  });
});

describe('10,000 hostile datagrams', () => {
  it('never throw, and every decodable one re-encodes to the same meaning', () => {
    const seed = 0xdf0dcafe;
    const rand = prng(seed);
    const counts = { ok: 0, error: 0, answered: 0 };
    for (let i = 0; i < 10_000; i++) {
      const buf = hostileDatagram(rand, false);
      let d: ReturnType<typeof decodePacket>;
      try {
        d = decodePacket(buf);
      } catch (e) {
        throw new Error(`seed ${seed} datagram ${i} threw ${(e as Error).message}: ${buf.toString('hex')}`);
      }
      if (!d.ok) {
        counts.error++;
        expect(typeof d.error.message).toBe('string');
        continue;
      }
      counts.ok++;
      const info = readClientInfo(d.packet);
      expect(typeof info.ok).toBe('boolean');
      if (decide(d.packet, CONFIG).answer) counts.answered++;
      const again = decodePacket(encodePacket(d.packet));
      expect(again.ok && opts(again.packet), `seed ${seed} datagram ${i}`).toEqual(opts(d.packet));
    }
    // The generator must exercise both sides, or the test proves little.
    expect(counts.ok).toBeGreaterThan(1000);
    expect(counts.error).toBeGreaterThan(1000);
    expect(counts.answered).toBeGreaterThan(100);
  });
});
