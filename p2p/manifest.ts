// The piece manifest of an image (issue #13): the piece length, the sha256 of every piece, and the whole
// size and sha256. Trust flows template → manifest → piece: the server builds a manifest only from bytes
// whose whole sha256 is the template's, and a peer uses a piece only when its sha256 is the manifest's,
// never because of whichever peer sent it. sha256 per piece, not a CRC, so a corrupt piece cannot pass.
import { createHash, type Hash } from 'node:crypto';
import { DragonflyError } from '../schemas/errors.js';
import type { Manifest } from '../schemas/types.js';
import { validateAgainst } from '../schemas/validate.js';

export type { Manifest };

/** The smallest piece: 4 MiB, so that small images still split into pieces worth a request each. */
export const MIN_PIECE_LENGTH = 4 * 2 ** 20;
/** A manifest stays small (512 × 65 bytes of hex) however large the image: the piece length grows instead. */
export const MAX_PIECES = 512;

const DIGEST = /^[0-9a-f]{64}$/;

/** 4 MiB, doubled as often as needed for at most MAX_PIECES pieces: 4 MiB up to 2 GiB, 8 MiB up to 4 GiB, … */
export function pieceLengthFor(size: number): number {
  if (!Number.isSafeInteger(size) || size < 0) throw new RangeError(`not an image size: ${size}`);
  let length = MIN_PIECE_LENGTH;
  // Dividing by a power of two is exact in floating point, so ceil() sees the true quotient.
  while (Math.ceil(size / length) > MAX_PIECES) length *= 2;
  return length;
}

/** An image of one piece (or none) gains nothing from peers: it is fetched directly. */
export function usesP2p(m: Manifest): boolean {
  return m.pieces.length > 1;
}

/** Where piece i lies in the image; every piece is pieceLength long but the last, which holds the rest. */
export function pieceRange(m: Manifest, i: number): { offset: number; length: number } {
  if (!Number.isInteger(i) || i < 0 || i >= m.pieces.length) throw new RangeError(`no piece ${i} in an image of ${m.pieces.length} pieces`);
  const offset = i * m.pieceLength;
  return { offset, length: Math.min(m.pieceLength, m.size - offset) };
}

/** True when bytes are exactly piece i: its length and its sha256. A false piece must never be used or served. */
export function verifyPiece(m: Manifest, i: number, bytes: Uint8Array): boolean {
  const { length } = pieceRange(m, i);
  return bytes.byteLength === length && createHash('sha256').update(bytes).digest('hex') === m.pieces[i];
}

/**
 * Builds the manifest of an image in one pass over its bytes, in whatever chunks they arrive: each byte is
 * hashed twice (its piece, the whole image) and none is kept. The size must be known before the first byte
 * (the template's size, or the origin's Content-Length), because the piece length follows from it.
 */
export class ManifestBuilder {
  readonly size: number;
  readonly pieceLength: number;
  readonly #expectedSha256: string;
  readonly #whole = createHash('sha256');
  #piece: Hash = createHash('sha256');
  #inPiece = 0;
  #received = 0;
  #finished = false;
  readonly #pieces: string[] = [];

  constructor(opts: { size: number; expectedSha256: string }) {
    this.size = opts.size;
    this.pieceLength = pieceLengthFor(opts.size);
    this.#expectedSha256 = templateSha256(opts.expectedSha256);
  }

  update(chunk: Uint8Array): void {
    if (this.#finished) throw new Error('ManifestBuilder.update after finish');
    if (this.#received + chunk.byteLength > this.size) {
      throw new DragonflyError('DF_ERR_IMAGE_SHA256', `the image is longer than the ${this.size} bytes expected`, { size: this.size });
    }
    this.#whole.update(chunk);
    // A chunk may end a piece and start the next one (or several): split it at the boundaries.
    for (let at = 0; at < chunk.byteLength; ) {
      const take = Math.min(this.pieceLength - this.#inPiece, chunk.byteLength - at);
      this.#piece.update(chunk.subarray(at, at + take));
      at += take;
      this.#inPiece += take;
      if (this.#inPiece === this.pieceLength) this.#closePiece();
    }
    this.#received += chunk.byteLength;
  }

  /** The manifest, only when the bytes were exactly the expected size and sha256. */
  finish(): Manifest {
    if (this.#finished) throw new Error('ManifestBuilder.finish called twice');
    this.#finished = true;
    if (this.#received !== this.size) {
      throw new DragonflyError('DF_ERR_IMAGE_SHA256', `the image ended after ${this.#received} of the ${this.size} bytes expected`, { size: this.size, received: this.#received });
    }
    if (this.#inPiece > 0) this.#closePiece();
    const sha256 = this.#whole.digest('hex');
    if (sha256 !== this.#expectedSha256) {
      throw new DragonflyError('DF_ERR_IMAGE_SHA256', `sha256 mismatch: the template says ${this.#expectedSha256}, the image's ${this.size} bytes hash to ${sha256}`, {
        expected: this.#expectedSha256,
        actual: sha256,
      });
    }
    return { version: 1, size: this.size, sha256, pieceLength: this.pieceLength, pieces: [...this.#pieces] };
  }

  #closePiece(): void {
    this.#pieces.push(this.#piece.digest('hex'));
    this.#piece = createHash('sha256');
    this.#inPiece = 0;
  }
}

/**
 * The manifest of the image a stream yields, refused (DF_ERR_IMAGE_SHA256) unless its bytes are the
 * template's: expectedSha256, and expectedSize when the template gives one. `size` is what the origin
 * announces (Content-Length), needed only when the template has no size.
 */
export async function buildManifest(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
  opts: { expectedSha256: string; expectedSize?: number; size?: number },
): Promise<Manifest> {
  const size = opts.expectedSize ?? opts.size;
  if (size === undefined) throw new TypeError('buildManifest needs expectedSize (the template) or size (the origin): the piece length follows from it');
  if (opts.size !== undefined && opts.size !== size) {
    throw new DragonflyError('DF_ERR_IMAGE_SHA256', `the origin announces ${opts.size} bytes, the template says ${size}`, { expected: size, announced: opts.size });
  }
  const builder = new ManifestBuilder({ size, expectedSha256: opts.expectedSha256 });
  for await (const chunk of source) builder.update(chunk);
  return builder.finish();
}

/**
 * A manifest from the network, checked as hostile input: the schema (p2p.schema.json), then what it cannot
 * state — the piece length is pieceLengthFor(size) and there are ceil(size / pieceLength) pieces, so every
 * piece but the last is pieceLength long and the last holds 1..pieceLength bytes (the lengths sum to size).
 * `expected` pins the manifest to what the peer was told (the template's sha256 and size).
 */
export function parseManifest(json: unknown, expected: { sha256?: string; size?: number } = {}): Manifest {
  // Cheap refusals first: the schema reports every error (allErrors), which for a huge array is a huge list.
  if (typeof json === 'object' && json !== null && !Array.isArray(json)) {
    const fields = Object.keys(json).length;
    if (fields > 64) refuse(`${fields} fields, far more than a manifest's 5`);
    const pieces = (json as { pieces?: unknown }).pieces;
    if (Array.isArray(pieces) && pieces.length > MAX_PIECES) refuse(`${pieces.length} pieces, more than the ${MAX_PIECES} a manifest may list`);
  }
  const errors = validateAgainst('p2p', json);
  if (errors.length > 0) {
    // Paths and Ajv's words only: the offending values are the sender's and are not echoed.
    const said = errors.slice(0, 5).map((e) => `${e.instancePath || '(root)'} ${e.message ?? 'is invalid'}`);
    refuse(said.join('; ') + (errors.length > 5 ? `; and ${errors.length - 5} more` : ''));
  }
  const m = json as Manifest;
  const pieceLength = pieceLengthFor(m.size);
  if (m.pieceLength !== pieceLength) refuse(`pieceLength is ${m.pieceLength}, but an image of ${m.size} bytes has pieces of ${pieceLength}`);
  const count = Math.ceil(m.size / pieceLength);
  if (m.pieces.length !== count) refuse(`${m.pieces.length} pieces listed, but ${m.size} bytes in pieces of ${pieceLength} make ${count}`);
  if (expected.sha256 !== undefined && m.sha256 !== templateSha256(expected.sha256)) refuse(`the manifest is for sha256 ${m.sha256}, not the template's ${expected.sha256.toLowerCase()}`);
  if (expected.size !== undefined && m.size !== expected.size) refuse(`the manifest is for ${m.size} bytes, not the template's ${expected.size}`);
  // A fresh object: nothing the sender added beyond these fields travels further.
  return { version: 1, size: m.size, sha256: m.sha256, pieceLength, pieces: [...m.pieces] };
}

function refuse(message: string): never {
  throw new DragonflyError('DF_ERR_P2P_MANIFEST', `refused piece manifest: ${message}`);
}

/** The template's sha256 in the manifest's spelling (the template accepts upper-case hex). */
function templateSha256(text: string): string {
  const lower = text.toLowerCase();
  if (!DIGEST.test(lower)) throw new DragonflyError('DF_ERR_SHA256', `not a sha256: ${JSON.stringify(text.slice(0, 80))}`);
  return lower;
}
