import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Bitfield } from './bitfield.js';

const refused = (text: string, length: number) => () => Bitfield.fromBase64(text, length);

describe('Bitfield', () => {
  it('sets, counts and tests pieces, piece 0 in the most significant bit', () => {
    const f = new Bitfield(10);
    expect([f.count(), f.isComplete(), f.has(0), f.has(9)]).toEqual([0, false, false, false]);
    f.set(0);
    f.set(9);
    f.set(9); // setting twice counts once
    expect([f.count(), f.has(0), f.has(1), f.has(9)]).toEqual([2, true, false, true]);
    expect([...Buffer.from(f.toBase64(), 'base64')]).toEqual([0x80, 0x40]);
    expect(f.toBase64()).toBe('gEA=');
    for (let i = 0; i < 10; i++) f.set(i);
    expect([f.count(), f.isComplete()]).toEqual([10, true]);
    expect([...Buffer.from(f.toBase64(), 'base64')]).toEqual([0xff, 0xc0]); // spare bits stay clear
  });

  it('refuses pieces outside its length', () => {
    const f = new Bitfield(10);
    for (const bad of [-1, 10, 1.5, NaN]) {
      expect(() => f.has(bad), String(bad)).toThrow(RangeError);
      expect(() => f.set(bad), String(bad)).toThrow(RangeError);
    }
    expect(() => new Bitfield(-1)).toThrow(RangeError);
  });

  it('lists the missing pieces from a position, skipping whole bytes of held ones', () => {
    const f = new Bitfield(20);
    for (const i of [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 19]) f.set(i);
    expect([...f.missing()]).toEqual([9, 11, 12, 13, 14, 15, 16, 17, 18]);
    expect([...f.missing(12)]).toEqual([12, 13, 14, 15, 16, 17, 18]);
    expect([...f.missing(18)]).toEqual([18]);
    expect([...f.missing(19)]).toEqual([]);
    expect([...f.missing(25)]).toEqual([]);
    expect([...f.missing(-3)]).toEqual([9, 11, 12, 13, 14, 15, 16, 17, 18]);
    // Lazy: a picker stops after the first few without walking the rest.
    const it = new Bitfield(512).missing(100);
    expect([it.next().value, it.next().value]).toEqual([100, 101]);
  });

  it('handles lengths at byte boundaries and the empty field', () => {
    const empty = new Bitfield(0);
    expect([empty.toBase64(), empty.isComplete(), [...empty.missing()]]).toEqual(['', true, []]);
    expect(Bitfield.fromBase64('', 0).count()).toBe(0);
    const eight = new Bitfield(8);
    for (let i = 0; i < 8; i++) eight.set(i);
    expect(eight.toBase64()).toBe('/w==');
    expect(Bitfield.fromBase64('/w==', 8).isComplete()).toBe(true);
    expect(Bitfield.fromBase64('//8=', 16).isComplete()).toBe(true);
    expect(Bitfield.fromBase64('//+A', 17).isComplete()).toBe(true);
  });

  it('round-trips through base64 for any length and any set of pieces', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 600 }).chain((length) => fc.tuple(fc.constant(length), fc.array(fc.nat({ max: Math.max(0, length - 1) }), { maxLength: length }))),
        ([length, held]) => {
          const f = new Bitfield(length);
          for (const i of held) if (length > 0) f.set(i);
          const back = Bitfield.fromBase64(f.toBase64(), length);
          expect(back.count()).toBe(new Set(length > 0 ? held : []).size);
          expect(back.toBase64()).toBe(f.toBase64());
          for (let i = 0; i < length; i++) expect(back.has(i)).toBe(f.has(i));
          expect([...back.missing()]).toEqual([...f.missing()]);
        },
      ),
      { seed: 13, numRuns: 300 },
    );
  });

  it('refuses a bitfield of the wrong length, before decoding it when the text alone shows it', () => {
    expect(refused('gEA=', 17)).toThrow(expect.objectContaining({ code: 'DF_ERR_P2P_BITFIELD', message: 'refused piece bitfield: 2 bytes, but 17 pieces take 3' }));
    expect(refused('gEA=', 8)).toThrow(/2 bytes, but 8 pieces take 1/);
    expect(refused('gEA=gEA=', 10)).toThrow(/8 base64 characters, but 10 pieces take 4/);
    expect(refused('A'.repeat(10_000_000), 512)).toThrow(/10000000 base64 characters, but 512 pieces take 88/);
  });

  it('refuses set spare bits, non-canonical padding and characters outside base64', () => {
    expect(refused('gEE=', 10)).toThrow(/spare bits set after piece 9/); // 0x80 0x41: bit of "piece 15"
    expect(refused('gH8=', 10)).toThrow(/spare bits set/);
    expect(refused('gEB=', 10)).toThrow(/not the canonical base64/); // decodes as gEA= but is not its spelling
    expect(refused('gE-=', 10)).toThrow(/not base64/); // the URL-safe alphabet is another encoding
    expect(refused('gE A', 10)).toThrow(/not base64/);
    expect(refused('gEA', 10)).toThrow(/3 base64 characters/);
    expect(refused('g=A=', 10)).toThrow(/not base64/);
    expect(refused('gEA==', 10)).toThrow(/5 base64 characters/);
  });
});
