// Which pieces of an image a peer holds: one bit per piece, most significant bit first (piece 0 is 0x80 of
// byte 0), as BitTorrent's bitfield message (BEP 3). Peers exchange it as base64, so decoding is strict:
// a bitfield that is not exactly the one canonical encoding of `length` bits is refused, not guessed at.
import { DragonflyError } from '../schemas/errors.js';

const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

export class Bitfield {
  /** The number of pieces (bits); the spare bits of the last byte are always clear. */
  readonly length: number;
  readonly #bytes: Uint8Array;
  #count = 0;

  constructor(length: number) {
    if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`not a piece count: ${length}`);
    this.length = length;
    this.#bytes = new Uint8Array(Math.ceil(length / 8));
  }

  /** Decodes a peer's bitfield of `length` pieces (DF_ERR_P2P_BITFIELD unless it is exactly the canonical form). */
  static fromBase64(text: string, length: number): Bitfield {
    const field = new Bitfield(length);
    const bytes = field.#bytes.length;
    // Checked before decoding, so a huge string costs nothing: base64 of n bytes is 4·ceil(n/3) characters.
    if (text.length !== 4 * Math.ceil(bytes / 3)) refuse(`${text.length} base64 characters, but ${length} pieces take ${4 * Math.ceil(bytes / 3)}`);
    if (!BASE64.test(text)) refuse('not base64 (A-Z a-z 0-9 + / and = padding only)');
    const decoded = Buffer.from(text, 'base64');
    if (decoded.length !== bytes) refuse(`${decoded.length} bytes, but ${length} pieces take ${bytes}`);
    // Node ignores set bits in the padding ("QR==" decodes like "QQ=="): only the canonical spelling is accepted.
    if (decoded.toString('base64') !== text) refuse('not the canonical base64 of the bitfield');
    const spare = bytes * 8 - length;
    if (spare > 0 && (decoded[bytes - 1]! & ((1 << spare) - 1)) !== 0) refuse(`spare bits set after piece ${length - 1}`);
    field.#bytes.set(decoded);
    for (const b of decoded) field.#count += popcount(b);
    return field;
  }

  has(i: number): boolean {
    this.#check(i);
    return (this.#bytes[i >> 3]! & (0x80 >> (i & 7))) !== 0;
  }

  set(i: number): void {
    if (this.has(i)) return;
    this.#bytes[i >> 3]! |= 0x80 >> (i & 7);
    this.#count++;
  }

  /** How many pieces are held; kept as bits are set, so this is O(1). */
  count(): number {
    return this.#count;
  }

  isComplete(): boolean {
    return this.#count === this.length;
  }

  /** The pieces not held, in order, from piece `from` to the last (a whole byte of held pieces is skipped at once). */
  *missing(from = 0): IterableIterator<number> {
    for (let i = Math.max(0, Math.ceil(from)); i < this.length; ) {
      if ((i & 7) === 0 && this.#bytes[i >> 3] === 0xff) {
        i += 8;
        continue;
      }
      if (!this.has(i)) yield i;
      i++;
    }
  }

  toBase64(): string {
    return Buffer.from(this.#bytes.buffer, this.#bytes.byteOffset, this.#bytes.byteLength).toString('base64');
  }

  #check(i: number): void {
    if (!Number.isInteger(i) || i < 0 || i >= this.length) throw new RangeError(`no piece ${i} in a bitfield of ${this.length}`);
  }
}

function popcount(b: number): number {
  let n = 0;
  for (; b; b &= b - 1) n++;
  return n;
}

function refuse(message: string): never {
  throw new DragonflyError('DF_ERR_P2P_BITFIELD', `refused piece bitfield: ${message}`);
}
