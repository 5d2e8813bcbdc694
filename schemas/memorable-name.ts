// Memorable names (DESIGN.md): the low 44 bits of the boot MAC as four 11-bit indices into the BIP39
// English word list, each word capitalised, joined: 52:54:00:ab:cd:01 → CensusAbleQualityParent.
import { wordlist } from '@scure/bip39/wordlists/english.js';
import { normalizeMac } from './mac.js';

function capitalise(word: string): string {
  return word.charAt(0).toUpperCase() + word.slice(1);
}

/** The memorable name of a MAC, or undefined when the text is not a MAC. */
export function memorableName(mac: string): string | undefined {
  const norm = normalizeMac(mac);
  if (norm === undefined) return undefined;
  // The low 44 bits are the last 11 hex digits; 44 bits fit exactly in a double's 53-bit mantissa.
  let low44 = parseInt(norm.replaceAll(':', '').slice(1), 16);
  const words: string[] = [];
  for (let i = 0; i < 4; i++) {
    words.unshift(capitalise(wordlist[low44 % 2048]!));
    low44 = Math.floor(low44 / 2048);
  }
  return words.join('');
}

/**
 * Two MACs that differ only in their top 4 bits share a memorable name. The one recorded later gets a
 * stable suffix: the decimal value of those top 4 bits, which differs between any two colliding MACs.
 */
export function memorableNameWithSuffix(mac: string): string | undefined {
  const base = memorableName(mac);
  const norm = normalizeMac(mac);
  if (base === undefined || norm === undefined) return undefined;
  return base + String(parseInt(norm.charAt(0), 16));
}
