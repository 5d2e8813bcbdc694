import { describe, expect, it } from 'vitest';
import { decodePacket, encodePacket, encodeUserClass, MESSAGE_TYPE, OPTION, type DhcpPacket } from './packet.js';
import { answerFor, bootfileFor, configProblems, decide, type PolicyConfig, type RequestContext } from './policy.js';
import { CONFIG, fixturePacket, pxeRequest, withChanges } from './test-builders.js';

/** The reply as the client receives it: encoded, then decoded, options as hex (or text where readable). */
function onTheWire(request: DhcpPacket, config: PolicyConfig = CONFIG, context?: RequestContext) {
  const a = answerFor(request, config, context);
  if (!a) return undefined;
  const d = decodePacket(encodePacket(a.packet));
  if (!d.ok) throw new Error(d.error.message);
  const o = d.packet.options;
  const text = (code: number) => o.get(code)?.toString('latin1');
  return {
    answer: a,
    packet: d.packet,
    type: o.get(OPTION.MESSAGE_TYPE)?.[0],
    serverId: o.get(OPTION.SERVER_ID)?.join('.'),
    vendorClass: text(OPTION.VENDOR_CLASS),
    pxeOptions: o.get(OPTION.VENDOR_OPTIONS)?.toString('hex'),
    ipxeOptions: o.get(OPTION.IPXE_ENCAP)?.toString('hex'),
    tftpServer: text(OPTION.TFTP_SERVER),
    bootfile: text(OPTION.BOOTFILE),
    uuid: o.get(OPTION.CLIENT_UUID)?.toString('hex'),
    codes: [...o.keys()].sort((a, b) => a - b),
  };
}

const BIOS_ROM = pxeRequest({ arch: 0, vendorClass: 'PXEClient:Arch:00000:UNDI:002001' });

describe('proxyDHCP answers by client', () => {
  it('a BIOS PXE ROM (option 60 PXEClient:Arch:00000:UNDI:002001, 93=0) gets undionly.kpxe over TFTP', () => {
    const w = onTheWire(BIOS_ROM)!;
    expect(w.packet).toMatchObject({ op: 2, xid: BIOS_ROM.xid, flags: BIOS_ROM.flags, yiaddr: '0.0.0.0', siaddr: '10.0.0.1', ciaddr: '0.0.0.0', file: 'undionly.kpxe' });
    expect(w.packet.chaddr).toEqual(BIOS_ROM.chaddr);
    expect(w).toMatchObject({
      type: MESSAGE_TYPE.OFFER,
      serverId: '10.0.0.1',
      vendorClass: 'PXEClient',
      pxeOptions: '060108ff', // 43.6 discovery control = 8: boot the named file, no discovery/menu wait
      tftpServer: '10.0.0.1',
      bootfile: 'undionly.kpxe',
      uuid: BIOS_ROM.options.get(OPTION.CLIENT_UUID)!.toString('hex'), // 97 echoed
      ipxeOptions: undefined,
    });
    // A proxy never leases: no lease time, mask or router.
    expect(w.codes).toEqual([43, 53, 54, 60, 66, 67, 97]);
    expect(w.answer).toMatchObject({ client: 'pxe', arch: 0, stage: 'binary' });
  });

  it('real OVMF UEFI PXE (93=7) gets ipxe.efi, or snponly.efi when configured; 93=9 too', () => {
    const ovmf = fixturePacket('ovmf-efi-pxe-discover');
    expect(onTheWire(ovmf)).toMatchObject({ bootfile: 'ipxe.efi', vendorClass: 'PXEClient', type: MESSAGE_TYPE.OFFER });
    const snp = { ...CONFIG, bootfiles: { ...CONFIG.bootfiles, efi64: 'snponly.efi' } };
    expect(onTheWire(ovmf, snp)).toMatchObject({ bootfile: 'snponly.efi' });
    expect(onTheWire(pxeRequest({ arch: 9 }))).toMatchObject({ bootfile: 'ipxe.efi', answer: { arch: 9 } });
  });

  it('real OVMF UEFI HTTP boot (60 HTTPClient, 93=16) gets the HTTP URL of ipxe.efi and HTTPClient echoed', () => {
    const w = onTheWire(fixturePacket('ovmf-http-discover'))!;
    expect(w).toMatchObject({ vendorClass: 'HTTPClient', bootfile: 'http://10.0.0.1:8080/ipxe/ipxe.efi', pxeOptions: undefined, tftpServer: undefined });
    expect(w.packet.file).toBe('http://10.0.0.1:8080/ipxe/ipxe.efi');
    expect(w.answer.client).toBe('http');
  });

  it("iPXE's DISCOVER (user class iPXE, option 175) gets the HTTP script URL and 175.176 no-pxedhcp", () => {
    const w = onTheWire(fixturePacket('ipxe-rom-bios-discover'))!;
    expect(w).toMatchObject({ bootfile: 'http://10.0.0.1:8080/boot.ipxe', ipxeOptions: 'b00101', vendorClass: 'PXEClient' });
    expect(w.answer).toMatchObject({ client: 'ipxe', stage: 'script' });
    expect(w.packet.file).toBe('http://10.0.0.1:8080/boot.ipxe');
  });

  it('iPXE is recognised from an RFC 3004 user class too, on any architecture (EFI iPXE gets the script, not ipxe.efi again)', () => {
    const efiIpxe = pxeRequest({ arch: 7, userClass: encodeUserClass(['iPXE']), ipxe: true });
    expect(onTheWire(efiIpxe)).toMatchObject({ bootfile: 'http://10.0.0.1:8080/boot.ipxe', ipxeOptions: 'b00101' });
    expect(onTheWire(efiIpxe, { ...CONFIG, scriptPath: 'dragonfly/entry.ipxe', httpUrl: 'http://boot.lan:80/' })).toMatchObject({ bootfile: 'http://boot.lan:80/dragonfly/entry.ipxe' });
  });

  it('a client without option 60 (an ordinary DHCP client) gets nothing, nor does a Windows one', () => {
    expect(answerFor(pxeRequest({ vendorClass: null }), CONFIG)).toBeUndefined();
    expect(decide(pxeRequest({ vendorClass: null }), CONFIG)).toEqual({ answer: false, reason: 'not a PXE client (no option 60)' });
    expect(answerFor(pxeRequest({ vendorClass: 'MSFT 5.0' }), CONFIG)).toBeUndefined();
    expect(answerFor(pxeRequest({ vendorClass: 'udhcp 1.36.1', arch: null }), CONFIG)).toBeUndefined();
  });

  it('takes the architecture from option 60 when option 93 is missing, and BIOS when neither says', () => {
    expect(onTheWire(pxeRequest({ arch: null, vendorClass: 'PXEClient:Arch:00009:UNDI:003016' }))).toMatchObject({ bootfile: 'ipxe.efi' });
    expect(onTheWire(pxeRequest({ arch: null, vendorClass: 'PXEClient' }))).toMatchObject({ bootfile: 'undionly.kpxe' });
  });

  it('stays silent for an architecture without a configured file, answers once one is configured', () => {
    expect(decide(pxeRequest({ arch: 11 }), CONFIG)).toEqual({ answer: false, reason: 'no bootfile configured for client architecture 11' });
    expect(onTheWire(pxeRequest({ arch: 11 }), { ...CONFIG, bootfiles: { ...CONFIG.bootfiles, arm64: 'arm64/ipxe.efi' } })).toMatchObject({ bootfile: 'arm64/ipxe.efi' });
    const byArch = { ...CONFIG, bootfiles: { ...CONFIG.bootfiles, byArch: { 19: 'https://boot.lan/arm.efi', 0: 'pxelinux.0' } } };
    expect(onTheWire(pxeRequest({ arch: 19, vendorClass: 'HTTPClient:Arch:00019:UNDI:003000' }), byArch)).toMatchObject({ bootfile: 'https://boot.lan/arm.efi', vendorClass: 'HTTPClient' });
    expect(onTheWire(pxeRequest({ arch: 0 }), byArch)).toMatchObject({ bootfile: 'pxelinux.0' });
  });

  it('uses tftpServer for siaddr and option 66 when the TFTP server is elsewhere; 54 stays ours', () => {
    const w = onTheWire(BIOS_ROM, { ...CONFIG, tftpServer: '10.0.0.9' })!;
    expect(w.packet.siaddr).toBe('10.0.0.9');
    expect(w).toMatchObject({ tftpServer: '10.0.0.9', serverId: '10.0.0.1' });
  });

  it('puts a boot URL longer than the 128-byte file field into option 67 only', () => {
    const long = { ...CONFIG, httpUrl: 'http://10.0.0.1:8080/' + 'x'.repeat(150) };
    const w = onTheWire(fixturePacket('ipxe-rom-bios-discover'), long)!;
    expect(w.packet.file).toBe('');
    expect(w.bootfile).toBe(`${long.httpUrl}/boot.ipxe`);
  });
});

describe('which messages get an answer', () => {
  const request = (over: Parameters<typeof pxeRequest>[0]) => pxeRequest({ type: MESSAGE_TYPE.REQUEST, ciaddr: '10.0.0.50', ...over });

  it('on 4011 a REQUEST gets an ACK with ciaddr echoed (PXE 2.1 ProxyDHCP REQUEST)', () => {
    const w = onTheWire(request({}), CONFIG, { port: 'pxe', mode: 'proxy' })!;
    expect(w.type).toBe(MESSAGE_TYPE.ACK);
    expect(w.packet.ciaddr).toBe('10.0.0.50');
    expect(w.bootfile).toBe('undionly.kpxe');
  });

  it('on 67 in proxy mode a REQUEST is answered only when option 54 names us', () => {
    expect(decide(request({ serverId: '10.0.0.254' }), CONFIG)).toEqual({ answer: false, reason: 'REQUEST for another DHCP server' });
    expect(decide(request({}), CONFIG)).toEqual({ answer: false, reason: 'REQUEST for another DHCP server' });
    expect(onTheWire(request({ serverId: '10.0.0.1' }))?.type).toBe(MESSAGE_TYPE.ACK);
  });

  it('in full mode a REQUEST without option 54 (INIT-REBOOT) is answered, one for another server is not', () => {
    const full: RequestContext = { port: 'dhcp', mode: 'full' };
    expect(onTheWire(request({}), CONFIG, full)?.type).toBe(MESSAGE_TYPE.ACK);
    expect(answerFor(request({ serverId: '10.0.0.254' }), CONFIG, full)).toBeUndefined();
  });

  it('ignores INFORM, RELEASE, DECLINE, plain BOOTP and BOOTREPLYs', () => {
    for (const type of [MESSAGE_TYPE.INFORM, MESSAGE_TYPE.RELEASE, MESSAGE_TYPE.DECLINE, MESSAGE_TYPE.OFFER]) {
      expect(decide(pxeRequest({ type }), CONFIG), `type ${type}`).toEqual({ answer: false, reason: `message type ${type} is not answered` });
    }
    expect(decide(withChanges(BIOS_ROM, { drop: [OPTION.MESSAGE_TYPE] }), CONFIG)).toEqual({ answer: false, reason: 'BOOTP without a DHCP message type' });
    expect(decide({ ...BIOS_ROM, op: 2 }, CONFIG)).toEqual({ answer: false, reason: 'not a BOOTREQUEST' });
  });

  it('stays silent on a misshapen option 93 rather than guessing', () => {
    const d = decide(withChanges(BIOS_ROM, { set: [[OPTION.CLIENT_ARCH, Buffer.from([0])]] }), CONFIG);
    expect(d.answer).toBe(false);
    expect(!d.answer && d.reason).toMatch(/^malformed: option 93/);
  });
});

describe('option 97 (client machine identifier) is echoed only when well-formed', () => {
  const GUID = '4c4c4544004a3910804bb2c04f4d3232';
  const with97 = (value: Buffer, over: Parameters<typeof pxeRequest>[0] = {}) => withChanges(pxeRequest(over), { set: [[OPTION.CLIENT_UUID, value]] });

  it('a DISCOVER and a 4011 REQUEST with a 200-byte option 97 are answered, without it', () => {
    const huge = Buffer.concat([Buffer.from([0]), Buffer.alloc(199, 0x41)]);
    const offer = onTheWire(with97(huge))!;
    expect(offer).toMatchObject({ type: MESSAGE_TYPE.OFFER, bootfile: 'undionly.kpxe', uuid: undefined });
    const ack = onTheWire(with97(huge, { type: MESSAGE_TYPE.REQUEST, ciaddr: '10.0.0.50' }), CONFIG, { port: 'pxe', mode: 'proxy' })!;
    expect(ack).toMatchObject({ type: MESSAGE_TYPE.ACK, bootfile: 'undionly.kpxe', uuid: undefined });
  });

  it('4 KiB of option 97 in RFC 3396 instances does not make the reply outgrow the 576 bytes every client accepts', () => {
    const request = with97(Buffer.concat([Buffer.from([0]), Buffer.alloc(4095, 0x42)]));
    expect(decodePacket(encodePacket(request))).toMatchObject({ ok: true }); // it really is one 4 KiB option on the wire
    const reply = encodePacket(answerFor(request, CONFIG)!.packet);
    expect(reply.length).toBeLessThanOrEqual(576);
    expect(onTheWire(request)?.uuid).toBeUndefined();
  });

  it('omits every other misshapen 97 (RFC 4578 §2.3: type 0 and 16 bytes), echoes the well-formed one byte for byte', () => {
    for (const bad of ['', '00', GUID, '01' + GUID, '00' + GUID + '00']) {
      expect(onTheWire(with97(Buffer.from(bad, 'hex')))?.uuid, `option 97 = ${bad || '(empty)'}`).toBeUndefined();
    }
    expect(onTheWire(with97(Buffer.from('00' + GUID, 'hex')))?.uuid).toBe('00' + GUID);
  });
});

describe('full mode (test-only) and the chainload of iPXE ROMs', () => {
  const full: RequestContext = { port: 'dhcp', mode: 'full' };

  it('iPXE gets no option 60 in full mode (it would otherwise also send a ProxyDHCP REQUEST), PXE ROMs do', () => {
    expect(onTheWire(fixturePacket('ipxe-rom-bios-discover'), CONFIG, full)).toMatchObject({ vendorClass: undefined, pxeOptions: undefined, ipxeOptions: 'b00101' });
    expect(onTheWire(BIOS_ROM, CONFIG, full)).toMatchObject({ vendorClass: 'PXEClient', pxeOptions: '060108ff' });
  });

  it('chainloadIpxeRoms: an iPXE ROM gets the binary first, then (the same options, chained) the script', () => {
    const chain = { ...CONFIG, chainloadIpxeRoms: true };
    const ipxe = fixturePacket('ipxe-rom-bios-discover');
    expect(onTheWire(ipxe, chain, full)).toMatchObject({ bootfile: 'undionly.kpxe', ipxeOptions: 'b00101', answer: { client: 'ipxe', stage: 'binary' } });
    expect(onTheWire(ipxe, chain, { ...full, chainedRecently: true })).toMatchObject({ bootfile: 'http://10.0.0.1:8080/boot.ipxe', answer: { stage: 'script' } });
    // An iPXE ROM of an architecture without a binary runs the script itself.
    expect(onTheWire(pxeRequest({ arch: 11, userClass: Buffer.from('iPXE') }), chain, full)).toMatchObject({ bootfile: 'http://10.0.0.1:8080/boot.ipxe' });
    // Without the option the memory is irrelevant: the user class alone decides.
    expect(onTheWire(ipxe, CONFIG, { ...full, chainedRecently: false })).toMatchObject({ answer: { stage: 'script' } });
  });
});

describe('configuration', () => {
  it('names every problem a user can cause', () => {
    expect(configProblems(CONFIG)).toEqual([]);
    expect(configProblems({ ...CONFIG, serverIp: '10.0.0', httpUrl: 'ftp://x', tftpServer: 'tftp.lan', bootfiles: { bios: '', efi64: 'a b' } })).toEqual([
      'serverIp "10.0.0" is not an IPv4 address',
      'tftpServer "tftp.lan" is not an IPv4 address',
      'httpUrl "ftp://x" is not an http(s) URL such as http://10.0.0.1:8080',
      'bootfiles.bios and bootfiles.efi64 are required (e.g. undionly.kpxe and ipxe.efi)',
      'bootfile "" must be a non-empty name or URL of at most 255 bytes without spaces',
      'bootfile "a b" must be a non-empty name or URL of at most 255 bytes without spaces',
    ]);
  });

  it('maps RFC 4578 types to files, HTTP types to their TFTP twins', () => {
    const files = { bios: 'b', efi64: 'e64', efi32: 'e32', arm64: 'a64' };
    expect([0, 6, 7, 9, 11, 15, 16, 19, 10, 2].map((a) => bootfileFor(a, files) ?? '-')).toEqual(['b', 'e32', 'e64', 'e64', 'a64', 'e32', 'e64', 'a64', '-', '-']);
  });
});
