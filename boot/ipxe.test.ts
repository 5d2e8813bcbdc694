import { describe, expect, it } from 'vitest';
import { bootFateFor } from '../schemas/lifecycle.js';
import { bootScriptFor, entryScript, UnsafeScriptValue } from './ipxe.js';

const URL = 'http://10.0.0.1:8080';
const MAC = '52:54:00:ab:cd:01';
const TOKEN = 'ab'.repeat(32);

describe('entryScript', () => {
  it('chains to /boot/<mac> with buildarch, platform and uuid', () => {
    expect(entryScript(URL)).toBe(`#!ipxe
# Dragonfly: the server decides this machine's fate from its MAC.
chain --autofree http://10.0.0.1:8080/boot/\${netX/mac:hexhyp}?arch=\${buildarch}&platform=\${platform}&uuid=\${uuid} || goto retry
exit
:retry
echo Dragonfly: http://10.0.0.1:8080 did not answer; retrying in 10 seconds
sleep 10
chain --autofree http://10.0.0.1:8080/boot.ipxe
`);
  });
});

describe('bootScriptFor', () => {
  it('discovery boots Mage with the server URL and the MAC', () => {
    expect(bootScriptFor({ kind: 'discovery', reason: 'unknown' }, { serverUrl: URL, mac: MAC })).toBe(`#!ipxe
# Dragonfly: discovery for 52:54:00:ab:cd:01
kernel http://10.0.0.1:8080/mage/vmlinuz dragonfly.url=http://10.0.0.1:8080 dragonfly.mac=52:54:00:ab:cd:01 console=tty0 console=ttyS0,115200 initrd=initrd || goto failed
initrd --name initrd http://10.0.0.1:8080/mage/initrd || goto failed
boot || goto failed
:failed
echo Dragonfly: could not boot Mage; retrying in 10 seconds
sleep 10
chain --autofree http://10.0.0.1:8080/boot.ipxe
`);
  });

  it('imaging adds the workflow and its token', () => {
    const script = bootScriptFor({ kind: 'imaging', workflow: 'wf-web-01-g1-abc123', reason: 'pending' }, { serverUrl: URL, mac: MAC, name: 'web-01', token: TOKEN });
    expect(script.split('\n').slice(0, 3)).toEqual([
      '#!ipxe',
      '# Dragonfly: imaging (wf-web-01-g1-abc123) for 52:54:00:ab:cd:01 (web-01)',
      `kernel http://10.0.0.1:8080/mage/vmlinuz dragonfly.url=http://10.0.0.1:8080 dragonfly.mac=52:54:00:ab:cd:01 dragonfly.workflow=wf-web-01-g1-abc123 dragonfly.token=${TOKEN} console=tty0 console=ttyS0,115200 initrd=initrd || goto failed`,
    ]);
  });

  it('imaging of a claimed workflow names it but carries no token', () => {
    const script = bootScriptFor({ kind: 'imaging', workflow: 'wf-web-01-g1-abc123', reason: 'running' }, { serverUrl: URL, mac: MAC, name: 'web-01' });
    expect(script.split('\n').slice(0, 3)).toEqual([
      '#!ipxe',
      '# Dragonfly: imaging (wf-web-01-g1-abc123, claimed; waiting for it to end) for 52:54:00:ab:cd:01 (web-01)',
      'kernel http://10.0.0.1:8080/mage/vmlinuz dragonfly.url=http://10.0.0.1:8080 dragonfly.mac=52:54:00:ab:cd:01 dragonfly.workflow=wf-web-01-g1-abc123 console=tty0 console=ttyS0,115200 initrd=initrd || goto failed',
    ]);
  });

  it('local boot: exit for BIOS; exit with a sanboot fallback for EFI', () => {
    const fate = { kind: 'localboot' as const, reason: 'provisioned' };
    expect(bootScriptFor(fate, { serverUrl: URL, mac: MAC, name: 'web-01' })).toBe('#!ipxe\n# Dragonfly: local boot for 52:54:00:ab:cd:01 (web-01): provisioned\nexit\n');
    expect(bootScriptFor(fate, { serverUrl: URL, mac: MAC, platform: 'efi' })).toBe(
      '#!ipxe\n# Dragonfly: local boot for 52:54:00:ab:cd:01: provisioned\nexit || sanboot --no-describe --drive 0x80\n',
    );
  });

  it('refuses anything that could inject iPXE commands', () => {
    const fate = { kind: 'discovery' as const, reason: 'x' };
    for (const evil of ['52:54:00:ab:cd:01\nshell', '${net0/mac}', 'a b', 'x;shell', 'x||shell', "'"]) {
      expect(() => bootScriptFor(fate, { serverUrl: URL, mac: evil })).toThrow(UnsafeScriptValue);
      expect(() => bootScriptFor(fate, { serverUrl: URL, mac: MAC, name: evil })).toThrow(UnsafeScriptValue);
    }
    expect(() => bootScriptFor({ kind: 'imaging', workflow: 'wf-x', reason: 'x' }, { serverUrl: URL, mac: MAC, token: 'not-hex' })).toThrow(UnsafeScriptValue);
    expect(() => entryScript('http://x/${y}')).toThrow(UnsafeScriptValue);
  });
});

describe('bootFateFor (the table of DESIGN.md)', () => {
  const rec = { mac: MAC, memorableName: 'CensusAbleQualityParent', source: 'git' as const };
  const wf = (state: 'pending' | 'running' | 'succeeded' | 'failed') => ({
    id: 'wf-a', mac: MAC, machine: 'web-01', assignment: 'web', template: 't', generation: 1, state, reimage: false, createdAt: '', actions: [],
  });
  it('maps what the store knows to a fate', () => {
    expect(bootFateFor(undefined, undefined).kind).toBe('discovery');
    expect(bootFateFor({ ...rec, phase: 'Discovered' }, undefined).kind).toBe('discovery');
    expect(bootFateFor({ ...rec, phase: 'Registered' }, undefined).kind).toBe('discovery');
    expect(bootFateFor({ ...rec, phase: 'Provisioning', workflow: 'wf-a' }, wf('pending'))).toEqual({ kind: 'imaging', workflow: 'wf-a', reason: 'workflow wf-a is pending' });
    expect(bootFateFor({ ...rec, phase: 'Provisioning', workflow: 'wf-a' }, wf('running')).kind).toBe('imaging');
    expect(bootFateFor({ ...rec, phase: 'Ready', installed: { template: 't', generation: 1 } }, wf('succeeded')).kind).toBe('localboot');
    expect(bootFateFor({ ...rec, phase: 'Error' }, wf('failed')).kind).toBe('discovery');
    expect(bootFateFor({ ...rec, phase: 'Provisioning', spec: { mac: MAC, netboot: false } }, wf('pending'))).toEqual({ kind: 'localboot', reason: 'netboot: false' });
    expect(bootFateFor({ ...rec, phase: 'Retired', installed: { template: 't', generation: 1 } }, undefined).kind).toBe('localboot');
  });
});
