// Acceptance test of the proxyDHCP issue, with real firmware: QEMU's iPXE NIC ROM (TCG) on a tap in a private
// network namespace, our DHCP server on the bridge, TFTP for undionly.kpxe, and a tiny HTTP server. The chain
// must run to the end:
//   ROM DHCP → TFTP undionly.kpxe → undionly's DHCP (same options: told apart by per-MAC memory) → HTTP
//   boot.ipxe → the marker URL the script chains to.
// Two labs (test-netns-lab.ts): 'full' (our server in its test-only full mode is the only DHCP server) and
// 'proxy' (our proxyDHCP next to a plain DHCP server in a second namespace, like a router on another host,
// joined to the bridge by a veth pair). Needs root, iproute2, qemu-system-x86, ipxe, ipxe-qemu and tftpd-hpa
// (scripts/install-deps.sh). UEFI firmware (OVMF) is covered by netns-efi.test.ts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, SCRIPT_URL } from './test-netns-lab.js';

/** What both labs must show: the TFTP leg ran, then the script, then the marker, from the leased address. */
function expectWholeChain(lab: Lab, mac: string): void {
  const gets = lab.events.filter((e) => e.src === 'http').map((e) => e.url);
  expect(gets).toEqual(['/boot.ipxe', `/marker/${mac.replaceAll(':', '-')}`]);
  expect(lab.events.find((e) => e.src === 'http')?.from).toMatch(/192\.168\.77\.100$/);
  const console = lab.serial();
  expect(console).toMatch(/tftp:\/\/192\.168\.77\.1\/undionly\.kpxe\.* ok/);
  // The ROM's iPXE and then undionly.kpxe's: two banners.
  expect(console.split('Open Source Network Boot Firmware').length - 1).toBe(2);
  expect(console).toContain(`Filename: ${SCRIPT_URL}`);
  expect(console).toContain('dragonfly-netns: marker reached');
}

describe('PXE chain in a network namespace, our server in full mode (test-only, no other DHCP server)', () => {
  const lab = new Lab('full');
  const mac = '52:54:00:df:77:01';
  beforeAll(() => lab.start(), 120_000);
  afterAll(() => lab.stop(), 60_000);

  it('boots: DHCP (undionly.kpxe) → TFTP → DHCP again (script URL) → HTTP boot.ipxe → marker URL', async () => {
    const t0 = await lab.bootVm(mac);
    // The ROM gets the binary, undionly.kpxe (identical options) the script, all on port 67 with a lease.
    expect(lab.answers(mac)).toEqual(['OFFER dhcp undionly.kpxe', 'ACK dhcp undionly.kpxe', `OFFER dhcp ${SCRIPT_URL}`, `ACK dhcp ${SCRIPT_URL}`]);
    expect(lab.events.find((e) => e.src === 'dhcp' && e.type === 'ACK')?.ip).toBe('192.168.77.100');
    expectWholeChain(lab, mac);
    globalThis.console.log(`netns chain (full mode) from QEMU start: ${lab.timings(t0)}`);
  }, 300_000);
});

describe('PXE chain in a network namespace, our proxyDHCP next to a plain DHCP server', () => {
  const lab = new Lab('proxy');
  const mac = '52:54:00:df:77:02';
  beforeAll(() => lab.start(), 120_000);
  afterAll(() => lab.stop(), 60_000);

  it('boots with the address from the other server and the boot files from ours', async () => {
    const t0 = await lab.bootVm(mac);
    // The plain server leased; we never did (proxy answers carry no address: no `ip` in our log lines).
    expect(lab.events.filter((e) => e.src === 'router' && e.rx === 'REQUEST').length).toBeGreaterThanOrEqual(2);
    expect(lab.events.some((e) => e.src === 'dhcp' && e.ip !== undefined)).toBe(false);
    // Our REQUEST-less side of it: the REQUESTs name the other server (option 54), so we stay silent.
    expect(lab.events.some((e) => e.src === 'dhcp' && e.reason === 'REQUEST for another DHCP server')).toBe(true);
    // This iPXE boots from the ProxyDHCP offer itself (no 4011 REQUEST), so the per-MAC memory is marked on the
    // offer: the ROM's transaction gets the binary, undionly.kpxe's (new xid, same options) the script.
    expect(lab.answers(mac).filter((a) => a.startsWith('OFFER'))).toEqual(['OFFER dhcp undionly.kpxe', `OFFER dhcp ${SCRIPT_URL}`]);
    expectWholeChain(lab, mac);
    globalThis.console.log(`netns chain (proxy mode) from QEMU start: ${lab.timings(t0)}`);
  }, 300_000);
});
