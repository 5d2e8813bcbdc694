import { describe, expect, it } from 'vitest';
import { wordlist } from '@scure/bip39/wordlists/english.js';
import { memorableName, memorableNameWithSuffix } from './memorable-name.js';
import { normalizeMac } from './mac.js';

describe('memorableName', () => {
  it('matches the DESIGN.md example in every spelling of the MAC', () => {
    for (const mac of ['52:54:00:ab:cd:01', '52:54:00:AB:CD:01', '52-54-00-ab-cd-01']) {
      expect(memorableName(mac)).toBe('CensusAbleQualityParent');
    }
  });

  it('uses the low 44 bits as four 11-bit BIP39 indices', () => {
    // 0x0_0000_0000_0000 → index 0 four times; all ones in the low 44 bits → index 2047 four times.
    const first = wordlist[0]!.replace(/^./, (c) => c.toUpperCase());
    const last = wordlist[2047]!.replace(/^./, (c) => c.toUpperCase());
    expect(memorableName('00:00:00:00:00:00')).toBe(first.repeat(4));
    expect(memorableName('0f:ff:ff:ff:ff:ff')).toBe(last.repeat(4));
    // The top 4 bits do not count: these two collide, and the suffix tells them apart.
    expect(memorableName('f0:00:00:00:00:00')).toBe(first.repeat(4));
    expect(memorableNameWithSuffix('f0:00:00:00:00:00')).toBe(first.repeat(4) + '15');
    expect(memorableNameWithSuffix('00:00:00:00:00:00')).toBe(first.repeat(4) + '0');
  });

  it('refuses what is not a MAC', () => {
    for (const bad of ['', '52:54:00:ab:cd', '52:54:00:ab:cd:0g', '52:54-00:ab:cd:01', '525400abcd01', '${mac}']) {
      expect(memorableName(bad)).toBeUndefined();
      expect(normalizeMac(bad)).toBeUndefined();
    }
  });
});
