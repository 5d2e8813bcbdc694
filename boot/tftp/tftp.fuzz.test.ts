// Hostile input, fuzzed (issue #12 item 13): property-based fuzzing of the TFTP decoder and option
// negotiation with fast-check, 10,000 inputs per property from a fixed seed (a failure replays in CI, shrunk
// to a minimal counterexample). Invariants: decoding is total (a typed `{ ok: false }`, never an exception);
// whatever a client asks, negotiated values stay in their RFC ranges and under the server's caps (RFC 2348
// blksize 8–65464, RFC 7440 windowsize 1–65535 and one window ≤ MAX_WINDOW_BYTES, RFC 2349 timeout ≤
// MAX_TIMEOUT_S and tsize the real size); a name the server does not refuse stays inside its root.
import assert from 'node:assert/strict';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DEFAULT_BLKSIZE, MAX_BLKSIZE, MAX_TIMEOUT_S, MAX_WINDOW_BYTES, MAX_WINDOWSIZE, MIN_BLKSIZE, negotiateOptions, type NegotiationLimits } from './options.js';
import { decodePacket, encodeAck, encodeData, encodeError, encodeOack, encodeRequest, type DecodeErrorReason, type TftpOption } from './packet.js';
import { refusedName } from './source.js';

const RUNS = 10_000;
const REASONS: readonly DecodeErrorReason[] = ['too-short', 'unknown-opcode', 'unterminated-string', 'empty-filename', 'bad-encoding'];
const KNOWN = ['blksize', 'timeout', 'tsize', 'windowsize'] as const;

// ---- generators ----

/** Text a client may put in a NUL-terminated field: ASCII, any Unicode, raw code units (lone surrogates). */
const text = (maxLength: number) =>
  fc.oneof(
    fc.string({ maxLength }),
    fc.string({ maxLength, unit: 'grapheme' }),
    fc.string({ maxLength, unit: 'binary' }),
    fc.constantFrom('', '.', '..', '../etc/passwd', '/etc/passwd', 'a\\..\\b', 'ipxe.efi', 'pxelinux.cfg/01-52-54-00-ab-cd-01', 'a/../../b', './x', 'x/./y'),
  );
const optionName = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...KNOWN) },
  { weight: 2, arbitrary: fc.mixedCase(fc.constantFrom(...KNOWN)) },
  { weight: 1, arbitrary: fc.constantFrom('bl\u212asize' /* KELVIN SIGN: lower-cases to 'blksize' */, 'multicast', 'rollover', '__proto__', 'constructor', 'toString', 'hasOwnProperty') },
  { weight: 1, arbitrary: text(12) },
);
/** Values around every boundary the negotiation has, well-formed decimals or not. */
const optionValue = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom('0', '1', '5', '6', '7', '8', '255', '256', '512', '1428', '1468', '1469', '8192', '65464', '65465', '65535', '65536', '999999999999999', '1000000000000000', '00008', '') },
  { weight: 3, arbitrary: fc.nat().map(String) },
  { weight: 1, arbitrary: fc.constantFrom('1e3', '+5', '-1', ' 5', '5 ', '0x10', '1.5', 'NaN', 'Infinity', '٥' /* Arabic-Indic five */, '５' /* fullwidth five */) },
  { weight: 1, arbitrary: text(16) },
);
const option: fc.Arbitrary<TftpOption> = fc.record({ name: optionName, value: optionValue });
const options = fc.array(option, { maxLength: 12 });

/** Server caps as configured, including values a caller should never pass (negotiation clamps them itself). */
const limits: fc.Arbitrary<NegotiationLimits> = fc.record({
  maxBlksize: fc.oneof(fc.constantFrom(512, 1468, 8192, MAX_BLKSIZE), fc.integer({ min: -10, max: 100_000 }), fc.double()),
  maxWindowsize: fc.oneof(fc.constantFrom(1, 16, 64, MAX_WINDOWSIZE), fc.integer({ min: -10, max: 100_000 }), fc.double()),
});
const fileSize = fc.oneof(fc.nat(10_000_000), fc.maxSafeNat());

const u16 = (n: number) => [n >> 8, n & 0xff];
/** Datagrams with a plausible opcode (0–7) and random bytes after it, NULs frequent. */
const opcodeThenBytes = fc
  .tuple(fc.nat(7), fc.array(fc.oneof({ weight: 1, arbitrary: fc.constant(0) }, { weight: 5, arbitrary: fc.nat(255) }), { maxLength: 120 }))
  .map(([op, rest]) => Buffer.from([...u16(op), ...rest]));

/** A well-formed RRQ/WRQ (any names, modes and options), then cut, extended or edited. */
const request = fc.record({
  op: fc.constantFrom('RRQ' as const, 'WRQ' as const),
  filename: text(40),
  mode: fc.oneof(fc.mixedCase(fc.constantFrom('octet', 'netascii', 'mail')), text(10)),
  options,
});
const requestDatagram = fc
  .tuple(
    request.map((r) => encodeRequest(r.op, r.filename, r.mode, r.options)),
    fc.oneof(
      fc.constant({ kind: 'as-is' as const }),
      fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
      fc.record({ kind: fc.constant('append' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 12 }) }),
      fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.nat(255) }),
    ),
  )
  .map(([buf, e]) => {
    if (e.kind === 'truncate') return buf.subarray(0, e.at % (buf.length + 1));
    if (e.kind === 'append') return Buffer.concat([buf, e.bytes]);
    if (e.kind === 'set') {
      const b = Buffer.from(buf);
      b[e.at % b.length] = e.value;
      return b;
    }
    return buf;
  });

// ---- invariants ----

function decodeTotally(buf: Uint8Array) {
  const d = decodePacket(buf); // a throw fails the property with the datagram as counterexample
  if (!d.ok) {
    expect(REASONS).toContain(d.error.reason);
    expect(typeof d.error.message).toBe('string');
    return d;
  }
  const p = d.packet;
  switch (p.op) {
    case 'RRQ':
    case 'WRQ':
      expect(p.filename.length).toBeGreaterThan(0);
      expect(p.mode).toBe(p.mode.toLowerCase());
      for (const s of [p.filename, p.mode, ...p.options.flatMap((o) => [o.name, o.value])]) expect(s.includes('\0')).toBe(false);
      for (const o of p.options) expect(o.name).toBe(o.name.toLowerCase());
      break;
    case 'ACK':
    case 'DATA':
      expect(p.block).toBeGreaterThanOrEqual(0);
      expect(p.block).toBeLessThanOrEqual(0xffff);
      break;
    case 'ERROR':
      expect(p.code).toBeGreaterThanOrEqual(0);
      expect(p.code).toBeLessThanOrEqual(0xffff);
      expect(p.message.includes('\0')).toBe(false);
      break;
    case 'OACK':
      for (const o of p.options) expect(o.name).toBe(o.name.toLowerCase());
  }
  return d;
}

/** The values RFC 2348, 2349 and 7440 let a client ask for: plain decimals in range. */
function validRequest(o: TftpOption): boolean {
  if (!/^[0-9]{1,15}$/.test(o.value)) return false;
  const n = Number(o.value);
  if (o.name === 'blksize') return n >= MIN_BLKSIZE;
  if (o.name === 'timeout') return n >= 1 && n <= 255;
  if (o.name === 'windowsize') return n >= 1 && n <= MAX_WINDOWSIZE;
  return o.name === 'tsize';
}

/** What the server grants, checked against the RFC ranges, its caps, and what the client asked. */
function checkNegotiation(requested: readonly TftpOption[], size: number, lim: NegotiationLimits): void {
  const n = negotiateOptions(requested, size, lim);
  const { blksize, windowsize, timeoutMs } = n.params;
  const clamp = (x: number, lo: number, hi: number) => (Number.isFinite(x) ? Math.min(hi, Math.max(lo, Math.floor(x))) : hi);
  // node:assert rather than expect here: this runs 20,000 times, and each message says which rule broke.
  // RFC 2348 and the server's cap.
  assert.ok(Number.isInteger(blksize) && blksize >= MIN_BLKSIZE && blksize <= MAX_BLKSIZE, `blksize ${blksize} outside 8–65464`);
  assert.ok(blksize <= Math.max(DEFAULT_BLKSIZE, clamp(lim.maxBlksize, MIN_BLKSIZE, MAX_BLKSIZE)), `blksize ${blksize} above the cap`);
  // RFC 7440 §3 and the server's caps: one window's payload fits MAX_WINDOW_BYTES (or is one block).
  assert.ok(Number.isInteger(windowsize) && windowsize >= 1 && windowsize <= MAX_WINDOWSIZE, `windowsize ${windowsize} outside 1–65535`);
  assert.ok(windowsize <= clamp(lim.maxWindowsize, 1, MAX_WINDOWSIZE), `windowsize ${windowsize} above the cap`);
  assert.ok(blksize * windowsize <= Math.max(MAX_WINDOW_BYTES, blksize), `window of ${blksize} × ${windowsize} bytes`);
  // RFC 2349 timeout: whole seconds, never above what the server clamps to.
  if (timeoutMs !== undefined) assert.ok(timeoutMs % 1000 === 0 && timeoutMs >= 1000 && timeoutMs <= MAX_TIMEOUT_S * 1000, `timeout ${timeoutMs} ms`);

  // The OACK: known options only, each once, in request order, values plain decimals that say what applies.
  const names = n.oack.map((o) => o.name);
  assert.equal(new Set(names).size, names.length, 'an option acknowledged twice');
  const firstAt = (name: string) => requested.findIndex((o) => o.name === name && validRequest(o));
  for (let i = 1; i < names.length; i++) assert.ok(firstAt(names[i]!) > firstAt(names[i - 1]!), 'OACK out of request order');
  for (const o of n.oack) assert.ok((KNOWN as readonly string[]).includes(o.name) && /^[0-9]+$/.test(o.value), `OACK ${o.name}=${o.value}`);
  const granted = Object.fromEntries(n.oack.map((o) => [o.name, o.value]));
  assert.equal(granted.blksize ?? String(DEFAULT_BLKSIZE), String(blksize));
  assert.equal(granted.windowsize ?? '1', String(windowsize));
  assert.equal(granted.timeout, timeoutMs === undefined ? undefined : String(timeoutMs / 1000));
  if (granted.tsize !== undefined) assert.equal(granted.tsize, String(size));
  // Only options asked for with a valid value, and never more than asked (RFC 2348, RFC 7440: the server may
  // only lower a value); every valid request but a too-long timeout is answered.
  const asked = (name: string) => requested.find((o) => o.name === name && validRequest(o))?.value;
  for (const o of n.oack) assert.notEqual(asked(o.name), undefined, `${o.name} acknowledged but not validly asked`);
  for (const name of KNOWN) if (name !== 'timeout' && asked(name) !== undefined) assert.notEqual(granted[name], undefined, `${name} validly asked, not acknowledged`);
  if (granted.blksize !== undefined) assert.ok(blksize <= Number(asked('blksize')), 'blksize above the request');
  if (granted.windowsize !== undefined) assert.ok(windowsize <= Number(asked('windowsize')), 'windowsize above the request');
  const firstValidTimeout = asked('timeout');
  if (granted.timeout !== undefined) assert.equal(granted.timeout, String(Number(firstValidTimeout)));
  // A client asking more than MAX_TIMEOUT_S is declined (RFC 2349: an accepted timeout echoes the request).
  if (firstValidTimeout !== undefined && Number(firstValidTimeout) > MAX_TIMEOUT_S) assert.equal(granted.timeout, undefined);
}

describe('TFTP under hostile input (fast-check)', () => {
  it('random datagrams: decoding is total and every decoded field is well-typed', () => {
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 600 }), opcodeThenBytes), (buf) => {
        decodeTotally(buf);
      }),
      { numRuns: RUNS, seed: 0x7f7e0001 },
    );
  });

  it('RRQ/WRQ with random names, modes and option lists, then cut or edited: decode is total, and a decoded request round-trips', () => {
    let decoded = 0;
    fc.assert(
      fc.property(requestDatagram, (buf) => {
        const d = decodeTotally(buf);
        if (!d.ok || (d.packet.op !== 'RRQ' && d.packet.op !== 'WRQ')) return;
        decoded++;
        const p = d.packet;
        // Re-encoding what was decoded gives back the same request (option names as lower-cased).
        expect(decodePacket(encodeRequest(p.op, p.filename, p.mode, p.options))).toEqual({ ok: true, packet: p });
        // A name the server does not refuse before touching the disk resolves inside the root.
        if (refusedName(p.filename) === undefined) {
          const root = path.resolve('/srv/tftp');
          const resolved = path.resolve(root, p.filename);
          expect(resolved === root || resolved.startsWith(root + path.sep), p.filename).toBe(true);
        }
      }),
      { numRuns: RUNS, seed: 0x7f7e0002 },
    );
    expect(decoded).toBeGreaterThan(RUNS / 4);
  });

  it('negotiation of random option lists (names, values, caps, file sizes): every granted value stays in its RFC range and under the caps', () => {
    fc.assert(
      fc.property(options, fileSize, limits, (requested, size, lim) => {
        checkNegotiation(requested, size, lim);
        // The same options as they arrive on the wire (names lower-cased by the decoder).
        const d = decodePacket(encodeRequest('RRQ', 'ipxe.efi', 'octet', requested));
        if (d.ok && d.packet.op === 'RRQ') checkNegotiation(d.packet.options, size, lim);
      }),
      { numRuns: RUNS, seed: 0x7f7e0003 },
    );
  });

  it('ACK, DATA, ERROR and OACK datagrams: random fields round-trip, and edited ones decode totally', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.nat(0xffff).map((block) => ({ buf: encodeAck(block), expect: { op: 'ACK', block } as const })),
          fc.tuple(fc.nat(0xffff), fc.uint8Array({ maxLength: 64 })).map(([block, data]) => ({ buf: encodeData(block, data), expect: { op: 'DATA', block, data: Buffer.from(data) } as const })),
          fc.tuple(fc.nat(0xffff), text(40)).map(([code, message]) => ({ buf: encodeError(code, message), expect: { op: 'ERROR', code, message } as const })),
          fc.array(option, { maxLength: 4 }).map((opts) => ({ buf: encodeOack(opts), expect: undefined })),
        ),
        fc.option(fc.tuple(fc.nat(), fc.nat(255)), { nil: undefined }),
        ({ buf, expect: want }, edit) => {
          if (edit) {
            const b = Buffer.from(buf);
            b[edit[0] % b.length] = edit[1];
            decodeTotally(b);
            decodeTotally(b.subarray(0, edit[0] % (b.length + 1)));
            return;
          }
          const d = decodeTotally(buf);
          // An ERROR message with a NUL or invalid UTF-8 is cut or dropped; everything else comes back as sent.
          if (want && !(want.op === 'ERROR' && (want.message.includes('\0') || Buffer.from(want.message, 'utf8').toString('utf8') !== want.message))) {
            expect(d).toEqual({ ok: true, packet: want });
          }
          if (!want) expect(d.ok && d.packet.op).toBe('OACK');
        },
      ),
      { numRuns: RUNS, seed: 0x7f7e0004 },
    );
  });
});
