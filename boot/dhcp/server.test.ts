// The proxyDHCP on 127.0.0.1 high ports: replies really travel over UDP (broadcast to the client port for
// port-67 answers, unicast back for 4011), and hostile input never stops it.
import { afterEach, describe, expect, it } from 'vitest';
import { DragonflyError } from '../../schemas/errors.js';
import { encodePacket, MESSAGE_TYPE, OPTION } from './packet.js';
import { startProxyDhcp, type DhcpLog, type ProxyDhcpServer, type StartProxyDhcpOptions } from './server.js';
import { CONFIG, fixturePacket, hostileDatagram, pxeRequest, udpClient, until, withChanges } from './test-builders.js';
import { prng } from '../../test/prng.js';

const LOCAL = { ...CONFIG, serverIp: '127.0.0.1', httpUrl: 'http://127.0.0.1:8080' };
const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function setup(over: Partial<StartProxyDhcpOptions> = {}) {
  const client = await udpClient();
  cleanups.push(client.close);
  const lines: Array<{ level: string; obj: Record<string, unknown>; msg: string }> = [];
  const log: DhcpLog = {
    info: (obj, msg) => lines.push({ level: 'info', obj: obj as Record<string, unknown>, msg }),
    warn: (obj, msg) => lines.push({ level: 'warn', obj: obj as Record<string, unknown>, msg }),
    debug: (obj, msg) => lines.push({ level: 'debug', obj: obj as Record<string, unknown>, msg }),
  };
  const server: ProxyDhcpServer = await startProxyDhcp({ interfaceIp: '127.0.0.1', ports: { dhcp: 0, pxe: 0, client: client.port }, config: LOCAL, log, ...over });
  cleanups.push(server.close);
  return { client, server, lines };
}

let xid = 0x5000_0000;
const nextXid = () => ++xid;

describe('proxyDHCP over UDP', () => {
  it("answers iPXE's DISCOVER on the DHCP port by broadcast to the client port, from the server's address", async () => {
    const { client, server } = await setup();
    const req = withChanges(fixturePacket('ipxe-rom-bios-discover'), { xid: nextXid() });
    await client.send(encodePacket(req), server.ports.dhcp);
    const { packet, from, bytes } = await client.reply(req.xid);
    expect(from.address).toBe('127.0.0.1');
    expect(from.port).toBe(server.ports.dhcp);
    expect(bytes).toBeGreaterThanOrEqual(300);
    expect(packet.options.get(OPTION.MESSAGE_TYPE)?.[0]).toBe(MESSAGE_TYPE.OFFER);
    expect(packet.file).toBe('http://127.0.0.1:8080/boot.ipxe');
    expect(server.stats()).toMatchObject({ received: 1, offers: 1, malformed: 0, ignored: 0, handlerErrors: 0 });
    await server.close();
    await server.close(); // idempotent (afterEach closes it again)
  });

  it('answers a REQUEST on the PXE port (4011) by unicast to where it came from', async () => {
    const { client, server } = await setup();
    const req = pxeRequest({ type: MESSAGE_TYPE.REQUEST, arch: 7, xid: nextXid(), ciaddr: '127.0.0.1' });
    await client.send(encodePacket(req), server.ports.pxe);
    const { packet, from } = await client.reply(req.xid);
    expect(from.port).toBe(server.ports.pxe);
    expect(packet.options.get(OPTION.MESSAGE_TYPE)?.[0]).toBe(MESSAGE_TYPE.ACK);
    expect(packet.file).toBe('ipxe.efi');
    expect(server.stats().acks).toBe(1);
  });

  it('stays silent for a client without option 60, and logs why at debug level', async () => {
    const { client, server, lines } = await setup();
    const silent = pxeRequest({ vendorClass: null, xid: nextXid() });
    const pxe = pxeRequest({ xid: nextXid() });
    await client.send(encodePacket(silent), server.ports.dhcp);
    await client.send(encodePacket(pxe), server.ports.dhcp);
    await client.reply(pxe.xid);
    // Datagrams on loopback arrive in order: the answer to the second proves the first was handled.
    expect(client.seen.has(silent.xid)).toBe(false);
    expect(server.stats()).toMatchObject({ received: 2, ignored: 1, offers: 1 });
    expect(lines.find((l) => l.level === 'debug')).toMatchObject({ obj: { reason: 'not a PXE client (no option 60)' } });
  });

  it('survives 10,000 hostile datagrams on both ports, logs a bounded number of lines, then still answers', async () => {
    const { client, server, lines } = await setup({ logLinesPer10s: 5 });
    const rand = prng(0xd4c9);
    const total = 10_000;
    for (let i = 0; i < total; i++) {
      // ciaddr/giaddr zeroed: replies only ever go to loopback (broadcast from 127.0.0.1 stays on lo).
      await client.send(hostileDatagram(rand, true), i % 2 ? server.ports.pxe : server.ports.dhcp);
      // Pace in batches so that the kernel's receive buffer never drops one: every datagram is handled.
      if (i % 200 === 199) await until(() => server.stats().received === i + 1, 10_000, `server to read ${i + 1} datagrams`, 2);
    }
    await until(() => server.stats().received === total, 10_000, 'all datagrams read');
    const s = server.stats();
    expect(s.handlerErrors).toBe(0);
    expect(s.malformed).toBeGreaterThan(2000);
    expect(s.offers + s.acks).toBeGreaterThan(200);
    expect(s.malformed + s.ignored + s.offers + s.acks + s.naks).toBe(total);
    // 4 kinds × 5 lines per 10 s window: the run fits in two windows at most, whatever its speed.
    expect(lines.length).toBeLessThanOrEqual(4 * 5 * 2 + 4);
    expect(s.suppressedLogLines).toBeGreaterThan(1000);

    const valid = withChanges(fixturePacket('ovmf-efi-pxe-discover'), { xid: nextXid() });
    await client.send(encodePacket(valid), server.ports.dhcp);
    expect((await client.reply(valid.xid)).packet.file).toBe('ipxe.efi');
  });

  it('answers a DISCOVER and a 4011 REQUEST carrying a 200-byte option 97 without echoing it', async () => {
    const { client, server } = await setup();
    const huge: Array<[number, Buffer]> = [[OPTION.CLIENT_UUID, Buffer.concat([Buffer.from([0]), Buffer.alloc(199, 0x41)])]];
    const discover = withChanges(pxeRequest({ xid: nextXid() }), { set: huge });
    const request = withChanges(pxeRequest({ type: MESSAGE_TYPE.REQUEST, xid: nextXid(), ciaddr: '127.0.0.1' }), { set: huge });
    await client.send(encodePacket(discover), server.ports.dhcp);
    await client.send(encodePacket(request), server.ports.pxe);
    const [offer, ack] = [(await client.reply(discover.xid)).packet, (await client.reply(request.xid)).packet];
    expect(offer.options.get(OPTION.MESSAGE_TYPE)?.[0]).toBe(MESSAGE_TYPE.OFFER);
    expect(ack.options.get(OPTION.MESSAGE_TYPE)?.[0]).toBe(MESSAGE_TYPE.ACK);
    expect([offer.options.has(OPTION.CLIENT_UUID), ack.options.has(OPTION.CLIENT_UUID)]).toEqual([false, false]);
  });

  it('refuses a bad configuration and an unbindable address with DF_ERR_SERVE_CONFIG', async () => {
    const start = (over: Partial<StartProxyDhcpOptions>) => startProxyDhcp({ interfaceIp: '127.0.0.1', ports: { dhcp: 0, pxe: 0 }, config: LOCAL, ...over });
    await expect(start({ config: { ...LOCAL, httpUrl: 'nope' } })).rejects.toMatchObject({ code: 'DF_ERR_SERVE_CONFIG', message: expect.stringContaining('httpUrl "nope"') });
    await expect(start({ mode: 'full' })).rejects.toMatchObject({ code: 'DF_ERR_SERVE_CONFIG', message: expect.stringContaining('needs a pool') });
    await expect(start({ pool: { start: '127.0.0.10', end: '127.0.0.20', subnetMask: '255.0.0.0' } })).rejects.toBeInstanceOf(DragonflyError);
    await expect(start({ interfaceIp: '0.0.0.0' })).rejects.toMatchObject({ code: 'DF_ERR_SERVE_CONFIG' });
    // 192.0.2.1 (TEST-NET-1) is not an address of this host: bind fails, nothing is sent.
    const e = await start({ interfaceIp: '192.0.2.1' }).catch((err: unknown) => err);
    expect(e).toBeInstanceOf(DragonflyError);
    expect(e).toMatchObject({ code: 'DF_ERR_SERVE_CONFIG', hint: '192.0.2.1 is not an address of this host' });
  });
});

describe('full mode (test-only lease pool)', () => {
  const pool = { start: '127.0.0.100', end: '127.0.0.101', subnetMask: '255.0.0.0', leaseSeconds: 600 };

  it('offers an address from the pool, ACKs it, NAKs another, frees it on RELEASE', async () => {
    const { client, server } = await setup({ mode: 'full', pool });
    const mac = '52:54:00:00:00:07';
    const discover = pxeRequest({ mac, xid: nextXid() });
    await client.send(encodePacket(discover), server.ports.dhcp);
    const offer = (await client.reply(discover.xid)).packet;
    expect(offer.yiaddr).toBe('127.0.0.100');
    expect(offer.options.get(OPTION.LEASE_TIME)?.readUInt32BE(0)).toBe(600);
    expect(offer.options.get(OPTION.SUBNET_MASK)?.join('.')).toBe('255.0.0.0');
    expect(offer.file).toBe('undionly.kpxe');

    const request = pxeRequest({ mac, type: MESSAGE_TYPE.REQUEST, serverId: '127.0.0.1', requestedIp: '127.0.0.100', xid: nextXid() });
    await client.send(encodePacket(request), server.ports.dhcp);
    const ack = (await client.reply(request.xid)).packet;
    expect(ack.options.get(OPTION.MESSAGE_TYPE)?.[0]).toBe(MESSAGE_TYPE.ACK);
    expect(ack.yiaddr).toBe('127.0.0.100');

    const wrong = pxeRequest({ mac, type: MESSAGE_TYPE.REQUEST, requestedIp: '127.0.0.200', xid: nextXid() });
    await client.send(encodePacket(wrong), server.ports.dhcp);
    const nak = (await client.reply(wrong.xid)).packet;
    expect(nak.options.get(OPTION.MESSAGE_TYPE)?.[0]).toBe(MESSAGE_TYPE.NAK);
    expect([...nak.options.keys()].sort()).toEqual([OPTION.MESSAGE_TYPE, OPTION.SERVER_ID]);

    expect(server.stats().leases).toBe(1);
    await client.send(encodePacket(pxeRequest({ mac, type: MESSAGE_TYPE.RELEASE, xid: nextXid() })), server.ports.dhcp);
    await until(() => server.stats().leases === 0, 5000, 'the lease to be released');
  });

  it('remembers per MAC and transaction that an iPXE ROM was handed the binary: its next transaction gets the script', async () => {
    const { client, server } = await setup({ mode: 'full', pool, config: { ...LOCAL, chainloadIpxeRoms: true } });
    const rom = fixturePacket('ipxe-rom-bios-discover');
    const requestOpts: Array<[number, Buffer]> = [[OPTION.SERVER_ID, Buffer.from([127, 0, 0, 1])], [OPTION.REQUESTED_IP, Buffer.from([127, 0, 0, 100])]];
    const round = async (type: number, xid: number, set: Array<[number, Buffer]> = []) => {
      const p = withChanges(rom, { type, xid, set });
      await client.send(encodePacket(p), server.ports.dhcp);
      const reply = (await client.reply(xid)).packet;
      client.seen.delete(xid);
      return reply;
    };
    // The ROM's transaction: DISCOVER, a retransmitted DISCOVER and the REQUEST share one xid: all get the binary.
    const romXid = nextXid();
    expect((await round(MESSAGE_TYPE.DISCOVER, romXid)).file).toBe('undionly.kpxe');
    expect((await round(MESSAGE_TYPE.DISCOVER, romXid)).file).toBe('undionly.kpxe');
    expect((await round(MESSAGE_TYPE.REQUEST, romXid, requestOpts)).file).toBe('undionly.kpxe');
    // undionly.kpxe sends identical options in a new transaction: told apart only by the server's memory.
    const binXid = nextXid();
    expect((await round(MESSAGE_TYPE.DISCOVER, binXid)).file).toBe('http://127.0.0.1:8080/boot.ipxe');
    const ack = await round(MESSAGE_TYPE.REQUEST, binXid, requestOpts);
    expect(ack.file).toBe('http://127.0.0.1:8080/boot.ipxe');
    expect(ack.yiaddr).toBe('127.0.0.100');
  });

  it('with chainloadIpxeRoms, the iPXE that UEFI firmware just loaded gets the script, not ipxe.efi again (no loop)', async () => {
    const { client, server } = await setup({ mode: 'full', pool, config: { ...LOCAL, chainloadIpxeRoms: true } });
    const firmware = withChanges(fixturePacket('ovmf-efi-pxe-discover'), { xid: nextXid() });
    await client.send(encodePacket(firmware), server.ports.dhcp);
    expect((await client.reply(firmware.xid)).packet.file).toBe('ipxe.efi');
    // ipxe.efi's own DISCOVER: same MAC, arch 7, user class iPXE, a new xid.
    const ipxe = pxeRequest({ mac: '52:54:00:df:00:02', arch: 7, userClass: Buffer.from('iPXE'), ipxe: true, xid: nextXid() });
    await client.send(encodePacket(ipxe), server.ports.dhcp);
    expect((await client.reply(ipxe.xid)).packet.file).toBe('http://127.0.0.1:8080/boot.ipxe');
  });

  it('forgets the chain after the window: a reboot starts from the binary again', async () => {
    const { client, server } = await setup({ mode: 'full', pool, config: { ...LOCAL, chainloadIpxeRoms: true }, chainWindowMs: 0 });
    const rom = fixturePacket('ipxe-rom-bios-discover');
    for (const xid of [nextXid(), nextXid()]) {
      const p = withChanges(rom, { xid });
      await client.send(encodePacket(p), server.ports.dhcp);
      expect((await client.reply(xid)).packet.file).toBe('undionly.kpxe');
    }
  });
});
