import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DragonflyError } from '../schemas/errors.js';
import { buildManifest, ManifestBuilder, MAX_PIECES, MIN_PIECE_LENGTH, parseManifest, pieceLengthFor, pieceRange, usesP2p, verifyPiece, type Manifest } from './manifest.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Deterministic bytes with no period a piece length divides, so no two pieces hash the same by accident. */
function image(size: number, seed = 1): Uint8Array {
  const out = new Uint8Array(size);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

/** The manifest computed the slow, obvious way: each piece cut out and hashed on its own. */
function expectedManifest(data: Uint8Array): Manifest {
  const pieceLength = pieceLengthFor(data.byteLength);
  const pieces: string[] = [];
  for (let at = 0; at < data.byteLength; at += pieceLength) pieces.push(sha(data.subarray(at, at + pieceLength)));
  return { version: 1, size: data.byteLength, sha256: sha(data), pieceLength, pieces };
}

function chunks(data: Uint8Array, size: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let at = 0; at < data.byteLength; at += size) out.push(data.subarray(at, at + size));
  return out;
}

function build(data: Uint8Array, chunkSize: number): Manifest {
  const b = new ManifestBuilder({ size: data.byteLength, expectedSha256: sha(data) });
  for (const c of chunks(data, chunkSize)) b.update(c);
  return b.finish();
}

function codeOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    if (e instanceof DragonflyError) return e.code;
    throw e;
  }
  return undefined;
}

describe('pieceLengthFor', () => {
  it('is 4 MiB up to 2 GiB, then doubles so that there are at most 512 pieces', () => {
    expect(pieceLengthFor(0)).toBe(4 * MiB);
    expect(pieceLengthFor(1)).toBe(4 * MiB);
    expect(pieceLengthFor(2 * GiB)).toBe(4 * MiB); // exactly 512 pieces
    expect(pieceLengthFor(2 * GiB + 1)).toBe(8 * MiB); // 513 would be one too many
    expect(pieceLengthFor(4 * GiB)).toBe(8 * MiB);
    expect(pieceLengthFor(4 * GiB + 1)).toBe(16 * MiB);
    expect(pieceLengthFor(2 ** 40)).toBe(2 * GiB); // 1 TiB: 512 pieces of 2 GiB
    expect(pieceLengthFor(Number.MAX_SAFE_INTEGER)).toBe(2 ** 44);
  });

  it('is the smallest power-of-two multiple of 4 MiB that keeps the count at most 512', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), (size) => {
        const length = pieceLengthFor(size);
        const multiple = length / MIN_PIECE_LENGTH;
        expect(Number.isInteger(Math.log2(multiple))).toBe(true);
        expect(Math.ceil(size / length)).toBeLessThanOrEqual(MAX_PIECES);
        if (length > MIN_PIECE_LENGTH) expect(Math.ceil(size / (length / 2))).toBeGreaterThan(MAX_PIECES);
      }),
      { seed: 13, numRuns: 2000 },
    );
  });

  it('refuses what is not a size', () => {
    for (const bad of [-1, 1.5, NaN, Infinity, 2 ** 53]) expect(() => pieceLengthFor(bad), String(bad)).toThrow(RangeError);
  });
});

describe('ManifestBuilder', () => {
  // Sizes around the 4 MiB piece boundary: a single byte, one piece exactly, one byte over, two pieces less one
  // byte, two pieces exactly, and three pieces with a short last one.
  const sizes = [1, 4 * MiB - 1, 4 * MiB, 4 * MiB + 1, 8 * MiB - 1, 8 * MiB, 8 * MiB + 12345];
  const data = image(8 * MiB + 12345);

  it.each(sizes)('cuts an image of %i bytes into the same pieces as hashing each piece on its own', (size) => {
    const img = data.subarray(0, size);
    const want = expectedManifest(img);
    expect(want.pieces).toHaveLength(Math.ceil(size / (4 * MiB)));
    // Whole, one chunk a piece less a byte, and chunks of a prime size that straddle every boundary.
    for (const chunkSize of [size, 4 * MiB - 1, 1_000_003]) expect(build(img, chunkSize)).toEqual(want);
  });

  it('gives the same manifest for any chunking, down to one byte at a time', () => {
    const img = image(3000, 7);
    const want = expectedManifest(img);
    expect(build(img, 1)).toEqual(want);
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 3000 }), { maxLength: 20 }), (cuts) => {
        const at = [0, ...[...new Set(cuts)].sort((a, b) => a - b), 3000];
        const b = new ManifestBuilder({ size: 3000, expectedSha256: want.sha256.toUpperCase() });
        for (let i = 1; i < at.length; i++) b.update(img.subarray(at[i - 1], at[i])); // empty chunks included
        expect(b.finish()).toEqual(want);
      }),
      { seed: 13, numRuns: 200 },
    );
  });

  it('builds the manifest of a 1-byte image: one short piece, so no P2P', () => {
    const m = build(Uint8Array.of(0x2a), 1);
    expect(m).toEqual({ version: 1, size: 1, sha256: sha(Uint8Array.of(0x2a)), pieceLength: 4 * MiB, pieces: [sha(Uint8Array.of(0x2a))] });
    expect(pieceRange(m, 0)).toEqual({ offset: 0, length: 1 });
    expect(usesP2p(m)).toBe(false);
  });

  it('builds the manifest of an empty image: no pieces', () => {
    const b = new ManifestBuilder({ size: 0, expectedSha256: sha(new Uint8Array()) });
    expect(b.finish()).toEqual({ version: 1, size: 0, sha256: sha(new Uint8Array()), pieceLength: 4 * MiB, pieces: [] });
  });

  it('refuses bytes that are not the template sha256, fewer bytes, and more bytes', () => {
    const img = image(1000);
    const wrong = new ManifestBuilder({ size: 1000, expectedSha256: sha(image(1000, 2)) });
    wrong.update(img);
    expect(codeOf(() => wrong.finish())).toBe('DF_ERR_IMAGE_SHA256');

    const short = new ManifestBuilder({ size: 1000, expectedSha256: sha(img) });
    short.update(img.subarray(0, 999));
    expect(() => short.finish()).toThrow(/ended after 999 of the 1000 bytes/);

    const long = new ManifestBuilder({ size: 999, expectedSha256: sha(img) });
    expect(() => long.update(img)).toThrow(expect.objectContaining({ code: 'DF_ERR_IMAGE_SHA256' }));
  });

  it('refuses a template sha256 that is not one', () => {
    expect(codeOf(() => new ManifestBuilder({ size: 1, expectedSha256: 'sha256:abc' }))).toBe('DF_ERR_SHA256');
  });
});

describe('buildManifest', () => {
  const img = image(4 * MiB + 100, 3);
  const want = expectedManifest(img);

  it('reads a Node stream or any async iterable, checking the template sha256 and size', async () => {
    expect(await buildManifest(Readable.from(chunks(img, 65536)), { expectedSha256: want.sha256, expectedSize: img.byteLength })).toEqual(want);
    async function* gen() {
      yield* chunks(img, 1 << 20);
    }
    expect(await buildManifest(gen(), { expectedSha256: want.sha256.toUpperCase(), size: img.byteLength })).toEqual(want);
    expect(want.pieces).toHaveLength(2);
    expect(usesP2p(want)).toBe(true);
  });

  it('refuses an image whose sha256 or size is not the template', async () => {
    const other = sha(image(4 * MiB + 100, 4));
    await expect(buildManifest(Readable.from([img]), { expectedSha256: other, expectedSize: img.byteLength })).rejects.toMatchObject({ code: 'DF_ERR_IMAGE_SHA256' });
    // The template says one size, the origin streams another: one byte short, one byte over.
    await expect(buildManifest(Readable.from([img]), { expectedSha256: want.sha256, expectedSize: img.byteLength + 1 })).rejects.toMatchObject({ code: 'DF_ERR_IMAGE_SHA256' });
    await expect(buildManifest(Readable.from([img]), { expectedSha256: want.sha256, expectedSize: img.byteLength - 1 })).rejects.toMatchObject({ code: 'DF_ERR_IMAGE_SHA256' });
    // The origin announces another size than the template: refused before a byte is read.
    let read = 0;
    async function* counted() {
      read++;
      yield img;
    }
    await expect(buildManifest(counted(), { expectedSha256: want.sha256, expectedSize: img.byteLength, size: 5 })).rejects.toThrow(/announces 5 bytes, the template says/);
    expect(read).toBe(0);
    await expect(buildManifest(counted(), { expectedSha256: want.sha256 })).rejects.toThrow(TypeError);
  });
});

describe('pieceRange and verifyPiece', () => {
  const img = image(8 * MiB + 5, 5);
  const m = expectedManifest(img);

  it('gives each piece its offset and length, the last one short', () => {
    expect(m.pieces).toHaveLength(3);
    expect([0, 1, 2].map((i) => pieceRange(m, i))).toEqual([
      { offset: 0, length: 4 * MiB },
      { offset: 4 * MiB, length: 4 * MiB },
      { offset: 8 * MiB, length: 5 },
    ]);
    for (const bad of [-1, 3, 0.5, NaN]) expect(() => pieceRange(m, bad)).toThrow(RangeError);
  });

  it('accepts each true piece and catches a corrupted, truncated, extended or misplaced one', () => {
    const piece = (i: number) => {
      const { offset, length } = pieceRange(m, i);
      return img.slice(offset, offset + length);
    };
    for (const i of [0, 1, 2]) expect(verifyPiece(m, i, piece(i))).toBe(true);
    const corrupt = piece(1);
    corrupt[123456]! ^= 0x01; // one flipped bit
    expect(verifyPiece(m, 1, corrupt)).toBe(false);
    expect(verifyPiece(m, 1, piece(1).subarray(0, 4 * MiB - 1))).toBe(false);
    expect(verifyPiece(m, 2, Uint8Array.from([...piece(2), 0]))).toBe(false);
    expect(verifyPiece(m, 0, piece(1))).toBe(false); // a good piece, in the wrong place
  });

  it('works out the pieces of an image just above 2 GiB without holding it', () => {
    const size = 2 * GiB + 1;
    const pieces = Array.from({ length: 257 }, (_, i) => sha(Uint8Array.of(i & 0xff, i >> 8)));
    const big = parseManifest({ version: 1, size, sha256: 'ab'.repeat(32), pieceLength: 8 * MiB, pieces });
    expect(pieceRange(big, 0)).toEqual({ offset: 0, length: 8 * MiB });
    expect(pieceRange(big, 255)).toEqual({ offset: 255 * 8 * MiB, length: 8 * MiB });
    expect(pieceRange(big, 256)).toEqual({ offset: 2 * GiB, length: 1 });
    expect(verifyPiece(big, 256, new Uint8Array(2))).toBe(false); // a wrong length is refused before hashing
  });
});

describe('parseManifest', () => {
  const m = expectedManifest(image(8 * MiB + 5, 6));
  const hostile = (patch: Record<string, unknown>) => JSON.parse(JSON.stringify({ ...m, ...patch })) as unknown;

  it('accepts a manifest that went through JSON, and returns a copy of its own', () => {
    const input = JSON.parse(JSON.stringify(m)) as Manifest;
    const parsed = parseManifest(input, { sha256: m.sha256.toUpperCase(), size: m.size });
    expect(parsed).toEqual(m);
    input.pieces[0] = 'f'.repeat(64);
    expect(parsed.pieces[0]).toBe(m.pieces[0]);
  });

  it.each([
    ['a negative size', { size: -1 }, /\/size must be >= 0/],
    ['a fractional size', { size: m.size + 0.5 }, /\/size must be integer/],
    ['a size as text', { size: String(m.size) }, /\/size must be integer/],
    ['a size beyond 2^53', { size: 2 ** 60 }, /\/size must be <=/],
    ['one piece missing', { pieces: m.pieces.slice(0, 2) }, /2 pieces listed, but 8388613 bytes in pieces of 4194304 make 3/],
    ['one piece too many', { pieces: [...m.pieces, m.pieces[0]] }, /4 pieces listed/],
    ['a size that the pieces do not cover', { size: 8 * MiB }, /3 pieces listed, but 8388608 bytes .* make 2/],
    ['a non-hex piece hash', { pieces: [m.pieces[0], 'g'.repeat(64), m.pieces[2]] }, /\/pieces\/1 must match pattern/],
    ['an upper-case piece hash', { pieces: [m.pieces[0]!.toUpperCase(), m.pieces[1], m.pieces[2]] }, /\/pieces\/0 must match pattern/],
    ['a short whole hash', { sha256: m.sha256.slice(1) }, /\/sha256 must match pattern/],
    ['a piece hash that is not a string', { pieces: [m.pieces[0], 7, m.pieces[2]] }, /\/pieces\/1 must be string/],
    ['a piece length other than the size calls for', { pieceLength: 8 * MiB }, /pieceLength is 8388608, but an image of 8388613 bytes has pieces of 4194304/],
    ['a piece length that is not a multiple of 4 MiB', { pieceLength: 3 * MiB }, /\/pieceLength must be >= 4194304/],
    ['a piece length of 12 MiB (a multiple, not a power of two)', { pieceLength: 12 * MiB, pieces: m.pieces.slice(0, 1) }, /pieceLength is 12582912/],
    ['another version', { version: 2 }, /\/version must be equal to constant/],
    ['an unknown field', { seeders: ['10.0.0.9'] }, /must NOT have additional properties/],
  ])('refuses %s', (_, patch, message) => {
    const input = hostile(patch);
    expect(codeOf(() => parseManifest(input))).toBe('DF_ERR_P2P_MANIFEST');
    expect(() => parseManifest(input)).toThrow(message);
  });

  it('refuses what is not a manifest at all, without echoing it', () => {
    for (const input of [null, 'manifest', 42, [], [m], {}, JSON.parse('{"__proto__": {"size": 1}}')]) {
      expect(codeOf(() => parseManifest(input)), JSON.stringify(input)).toBe('DF_ERR_P2P_MANIFEST');
    }
    expect(() => parseManifest({ ...m, sha256: '<script>' })).toThrow(expect.objectContaining({ message: expect.not.stringContaining('<script>') }));
  });

  it('refuses huge arrays and objects at once, with a short message', () => {
    const many = new Array(1_000_000).fill('zz');
    let message = '';
    try {
      parseManifest({ ...m, pieces: many });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toBe('refused piece manifest: 1000000 pieces, more than the 512 a manifest may list');
    const wide = Object.fromEntries(Array.from({ length: 100_000 }, (_, i) => [`k${i}`, i]));
    expect(() => parseManifest({ ...m, ...wide })).toThrow(/100005 fields, far more than a manifest's 5/);
    // Many bad items within the limit: the message lists five and counts the rest.
    expect(() => parseManifest({ ...m, size: 512 * 4 * MiB, pieces: new Array(512).fill('x') })).toThrow(/; and 507 more$/);
  });

  it('refuses a manifest for another image than the peer was told', () => {
    expect(() => parseManifest(hostile({}), { sha256: 'ab'.repeat(32) })).toThrow(expect.objectContaining({ code: 'DF_ERR_P2P_MANIFEST', message: expect.stringMatching(/not the template's abab/) }));
    expect(() => parseManifest(hostile({}), { size: m.size + 1 })).toThrow(/not the template's 8388614/);
  });

  it('accepts the manifest of an empty image, and it does not use P2P', () => {
    const empty = parseManifest({ version: 1, size: 0, sha256: sha(new Uint8Array()), pieceLength: 4 * MiB, pieces: [] });
    expect(usesP2p(empty)).toBe(false);
  });
});
