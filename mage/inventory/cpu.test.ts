import { readFileSync } from 'node:fs';
import { describe, expect, test } from 'vitest';
import { parseCpuinfo } from './cpu.js';

const fixture = (name: string) => readFileSync(new URL(`../fixtures/${name}/proc/cpuinfo`, import.meta.url), 'utf8');

function x86(stanzas: Array<{ physical: number; core: number }>, model = 'Intel(R) Xeon(R) CPU E5-2620 0 @ 2.00GHz'): string {
  return stanzas
    .map((s, i) => `processor\t: ${i}\nmodel name\t: ${model}\nphysical id\t: ${s.physical}\ncore id\t\t: ${s.core}\ncpu cores\t: 2\n`)
    .join('\n');
}

describe('parseCpuinfo', () => {
  test('a captured KVM guest: 2 vCPUs, 2 cores', () => {
    expect(parseCpuinfo(fixture('firecracker-vm'))).toEqual({ model: 'AMD EPYC', cores: 2, threads: 2 });
  });

  test('SMT with sparse core ids (EPYC 7302P numbers its 16 cores 0,1,4,5,…,29)', () => {
    expect(parseCpuinfo(fixture('server-nvme-sata'))).toEqual({ model: 'AMD EPYC 7302P 16-Core Processor', cores: 16, threads: 32 });
  });

  test('two sockets: the same core id on each socket is two cores', () => {
    const text = x86([
      { physical: 0, core: 0 },
      { physical: 0, core: 1 },
      { physical: 1, core: 0 },
      { physical: 1, core: 1 },
      { physical: 0, core: 0 },
      { physical: 1, core: 1 },
    ]);
    expect(parseCpuinfo(text)).toEqual({ model: 'Intel(R) Xeon(R) CPU E5-2620 0 @ 2.00GHz', cores: 4, threads: 6 });
  });

  test('runs of spaces in the model name are collapsed', () => {
    const text = x86([{ physical: 0, core: 0 }], 'Intel(R) Xeon(R) CPU           E5-2620 0 @ 2.00GHz  ');
    expect(parseCpuinfo(text)?.model).toBe('Intel(R) Xeon(R) CPU E5-2620 0 @ 2.00GHz');
  });

  test('arm64 prints no model and no core ids: every processor is a core, the model stays unknown', () => {
    const stanza = (i: number) => `processor\t: ${i}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n`;
    expect(parseCpuinfo([0, 1, 2, 3].map(stanza).join('\n'))).toEqual({ cores: 4, threads: 4 });
  });

  test('32-bit arm: "model name" per processor, "Hardware" in a trailing stanza', () => {
    const text = 'processor\t: 0\nmodel name\t: ARMv7 Processor rev 4 (v7l)\n\nprocessor\t: 1\nmodel name\t: ARMv7 Processor rev 4 (v7l)\n\nHardware\t: BCM2835\nSerial\t\t: 00000000deadbeef\n';
    expect(parseCpuinfo(text)).toEqual({ model: 'ARMv7 Processor rev 4 (v7l)', cores: 2, threads: 2 });
  });

  test('empty or foreign text gives nothing rather than zeros', () => {
    expect(parseCpuinfo('')).toBeUndefined();
    expect(parseCpuinfo('\0\0garbage without colons\n\n\n')).toBeUndefined();
  });

  test('an overlong model is clipped to the schema limit of 256', () => {
    const cpu = parseCpuinfo(`processor : 0\nmodel name : ${'x'.repeat(1000)}\n`);
    expect(cpu?.model).toHaveLength(256);
  });
});
