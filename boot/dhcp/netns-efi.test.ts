// The UEFI half of the issue with real firmware: OVMF (EDK2, Debian ovmf) under QEMU/TCG in the namespace lab
// of test-netns-lab.ts, EDK2's own virtio-net driver and network stack (no iPXE in the firmware).
//   UEFI PXE (option 93 = 7): DHCP → TFTP ipxe.efi → iPXE's DHCP (user class iPXE) → HTTP boot.ipxe → marker.
//   UEFI HTTP boot (60 HTTPClient, 93 = 16) behind our proxyDHCP: the ProxyDHCP offer's URL → GET ipxe.efi →
//   iPXE's DHCP → boot.ipxe → marker.
// chainloadIpxeRoms stays on as in the iPXE ROM labs: the per-MAC memory must also recognise the iPXE that
// the firmware just loaded, or ipxe.efi would be handed ipxe.efi forever.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, SCRIPT_URL } from './test-netns-lab.js';

function expectScriptThenMarker(lab: Lab, mac: string): void {
  const gets = lab.events.filter((e) => e.src === 'http' && !String(e.url).startsWith('/ipxe/')).map((e) => e.url);
  expect(gets).toEqual(['/boot.ipxe', `/marker/${mac.replaceAll(':', '-')}`]);
  const console = lab.serial();
  expect(console).toContain(`Filename: ${SCRIPT_URL}`);
  expect(console).toContain('dragonfly-netns: marker reached');
}

describe('UEFI PXE (OVMF, arch 7) in a network namespace, our server in full mode (test-only)', () => {
  const lab = new Lab('full', ['ovmf-pxe']);
  const mac = '52:54:00:df:77:07';
  beforeAll(() => lab.start(), 120_000);
  afterAll(() => lab.stop(), 60_000);

  it('boots: DHCP (ipxe.efi) → TFTP ipxe.efi → DHCP again (script URL) → HTTP boot.ipxe → marker URL', async () => {
    const t0 = await lab.bootVm(mac, 'ovmf-pxe');
    expect(lab.answers(mac)).toEqual(['OFFER dhcp ipxe.efi', 'ACK dhcp ipxe.efi', `OFFER dhcp ${SCRIPT_URL}`, `ACK dhcp ${SCRIPT_URL}`]);
    const console = lab.serial();
    expect(console).toContain('NBP filename is ipxe.efi'); // EDK2's PXE took our bootfile
    expect(console).toMatch(/ipxe\.efi : \d+ bytes \[EFI\]|NBP file downloaded successfully/);
    expectScriptThenMarker(lab, mac);
    globalThis.console.log(`netns UEFI PXE (full mode) from QEMU start: ${lab.timings(t0)}`);
  }, 300_000);
});

describe('UEFI HTTP boot (OVMF, arch 16) in a network namespace, our proxyDHCP next to a plain DHCP server', () => {
  const lab = new Lab('proxy', ['ovmf-http']);
  const mac = '52:54:00:df:77:08';
  beforeAll(() => lab.start(), 120_000);
  afterAll(() => lab.stop(), 60_000);

  it('boots from the HTTP URL in our ProxyDHCP offer, then iPXE gets the script', async () => {
    const t0 = await lab.bootVm(mac, 'ovmf-http');
    const ipxeUrl = 'http://192.168.77.1:8080/ipxe/ipxe.efi';
    expect(lab.answers(mac).filter((a) => a.startsWith('OFFER'))).toEqual([`OFFER dhcp ${ipxeUrl}`, `OFFER dhcp ${SCRIPT_URL}`]);
    expect(lab.serial()).toContain(`URI: ${ipxeUrl}`); // EDK2's HTTP boot took our URL
    expect(lab.events.some((e) => e.src === 'http' && e.method === 'GET' && e.url === '/ipxe/ipxe.efi')).toBe(true);
    // The lease came from the other server; ours carried none.
    expect(lab.events.some((e) => e.src === 'dhcp' && e.ip !== undefined)).toBe(false);
    expectScriptThenMarker(lab, mac);
    globalThis.console.log(`netns UEFI HTTP boot (proxy mode) from QEMU start: ${lab.timings(t0)}`);
  }, 300_000);
});
