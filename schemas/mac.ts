// MAC addresses as users and firmware write them: any case, ':' or '-' (iPXE's ${mac:hexhyp}).
const MAC = /^[0-9a-f]{2}([:-])[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}$/i;

export function isMac(text: string): boolean {
  return MAC.test(text);
}

const CANONICAL = /^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$/;

/** Normalised form used as the store key: lower case, ':' separated. Returns undefined for anything else. */
export function normalizeMac(text: string): string | undefined {
  if (text.length !== 17) return undefined;
  if (CANONICAL.test(text)) return text; // the common case, cheaply (this runs on every PXE request)
  if (!MAC.test(text)) return undefined;
  return text.toLowerCase().replaceAll('-', ':');
}

/**
 * Whether a normalised MAC can be a NIC's own address: not all zeros, and not a group address (the I/G bit,
 * the low bit of the first octet, IEEE 802-2014 §8.2; ff:ff:ff:ff:ff:ff is one). Nothing else may become
 * a machine.
 */
export function isUnicastMac(mac: string): boolean {
  return mac !== '00:00:00:00:00:00' && (parseInt(mac.slice(0, 2), 16) & 1) === 0;
}
