// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320), as the UEFI spec §5.3.2 asks for the GPT header
// and entry-array checksums. Node has zlib.crc32 from 20.15 / 22.2 (this repo runs on 20.20, where it is
// present); package.json allows >= 20.11, so a 1 KiB table fallback covers the older releases.
import zlib from 'node:zlib';

const TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

/** The table implementation; exported so tests can check it against zlib's. */
export function crc32Table(data: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < data.length; i++) c = TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

const builtin = (zlib as { crc32?: (data: Uint8Array) => number }).crc32;

/** True when node:zlib provides crc32 (Node >= 20.15). */
export const CRC32_IS_BUILTIN = typeof builtin === 'function';

/** CRC-32 of `data` as an unsigned 32-bit number. */
export const crc32: (data: Uint8Array) => number = builtin ? (data) => builtin(data) >>> 0 : crc32Table;
