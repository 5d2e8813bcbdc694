import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { decodePacket, encodeAck, encodeData, encodeDataHeader, encodeError, encodeOack, encodeRequest, OPCODE } from './packet.js';

const bytes = (...parts: (number[] | string)[]) =>
  Buffer.concat(parts.map((p) => (typeof p === 'string' ? Buffer.from(p, 'utf8') : Buffer.from(p))));

describe('decodePacket', () => {
  it('decodes an RRQ with options, lower-casing mode and option names', () => {
    const r = decodePacket(bytes([0, 1], 'pxelinux.0\0OCTET\0BlkSize\x001468\0tsize\x000\0'));
    expect(r).toEqual({
      ok: true,
      packet: {
        op: 'RRQ',
        filename: 'pxelinux.0',
        mode: 'octet',
        options: [
          { name: 'blksize', value: '1468' },
          { name: 'tsize', value: '0' },
        ],
      },
    });
  });

  it('decodes a WRQ like an RRQ', () => {
    expect(decodePacket(encodeRequest('WRQ', 'up.bin'))).toEqual({
      ok: true,
      packet: { op: 'WRQ', filename: 'up.bin', mode: 'octet', options: [] },
    });
  });

  it('tolerates NUL padding after the options and a dangling option name at the very end', () => {
    const padded = decodePacket(bytes([0, 1], 'f\0octet\0tsize\x000\0\0\0\0'));
    expect(padded.ok && padded.packet.op === 'RRQ' && padded.packet.options).toEqual([{ name: 'tsize', value: '0' }]);
    const dangling = decodePacket(bytes([0, 1], 'f\0octet\0tsize\x000\0blksize\0'));
    expect(dangling.ok && dangling.packet.op === 'RRQ' && dangling.packet.options).toEqual([{ name: 'tsize', value: '0' }]);
  });

  it('decodes DATA, ACK (ignoring padding), ERROR and OACK', () => {
    expect(decodePacket(encodeData(7, Buffer.from('abc')))).toEqual({ ok: true, packet: { op: 'DATA', block: 7, data: Buffer.from('abc') } });
    expect(decodePacket(bytes([0, 4, 0xff, 0xfe, 0, 0]))).toEqual({ ok: true, packet: { op: 'ACK', block: 65534 } });
    expect(decodePacket(encodeError(1, 'File not found'))).toEqual({ ok: true, packet: { op: 'ERROR', code: 1, message: 'File not found' } });
    expect(decodePacket(bytes([0, 5, 0, 8], 'no NUL'))).toEqual({ ok: true, packet: { op: 'ERROR', code: 8, message: 'no NUL' } });
    expect(decodePacket(encodeOack([{ name: 'blksize', value: '1428' }]))).toEqual({
      ok: true,
      packet: { op: 'OACK', options: [{ name: 'blksize', value: '1428' }] },
    });
  });

  it.each([
    ['empty datagram', [], 'too-short', undefined],
    ['one byte', [0], 'too-short', undefined],
    ['bogus opcode', [0, 9, 1, 2], 'unknown-opcode', 9],
    ['opcode 0', [0, 0], 'unknown-opcode', 0],
    ['DATA without block', [0, 3, 1], 'too-short', OPCODE.DATA],
    ['ACK without block', [0, 4], 'too-short', OPCODE.ACK],
    ['ERROR without code', [0, 5, 0], 'too-short', OPCODE.ERROR],
    ['RRQ with unterminated filename', [0, 1, 0x61, 0x62], 'unterminated-string', OPCODE.RRQ],
    ['RRQ without mode terminator', [0, 1, 0x61, 0, 0x6f, 0x63], 'unterminated-string', OPCODE.RRQ],
    ['RRQ with empty filename', [0, 1, 0, 0x6f, 0], 'empty-filename', OPCODE.RRQ],
    ['RRQ with unterminated option value', [0, 1, 0x61, 0, 0x6f, 0, 0x62, 0, 0x31, 0x32], 'unterminated-string', OPCODE.RRQ],
    ['RRQ with invalid UTF-8 filename', [0, 1, 0xff, 0xfe, 0, 0x6f, 0], 'bad-encoding', OPCODE.RRQ],
    ['WRQ truncated', [0, 2, 0x61], 'unterminated-string', OPCODE.WRQ],
  ])('returns a typed error for %s', (_name, input, reason, opcode) => {
    const r = decodePacket(Buffer.from(input));
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.error.reason).toBe(reason);
      expect(r.error.opcode).toBe(opcode);
      expect(r.error.message).toEqual(expect.any(String));
    }
  });

  it('never throws on random input', () => {
    for (let i = 0; i < 5000; i++) {
      const input = randomBytes(i % 40);
      if (i % 3 === 0 && input.length > 1) input[0] = 0; // mostly plausible opcodes
      const r = decodePacket(input);
      expect(typeof r.ok).toBe('boolean');
    }
  });
});

describe('encoding', () => {
  it('writes the exact RFC 1350 layouts', () => {
    expect(encodeAck(1)).toEqual(bytes([0, 4, 0, 1]));
    expect(encodeError(2, 'x')).toEqual(bytes([0, 5, 0, 2, 0x78, 0]));
    expect(encodeRequest('RRQ', 'a', 'octet', [{ name: 'tsize', value: '0' }])).toEqual(bytes([0, 1], 'a\0octet\0tsize\x000\0'));
    expect(encodeOack([{ name: 'tsize', value: '74213' }])).toEqual(bytes([0, 6], 'tsize\x0074213\0'));
  });

  it('wraps block numbers past 65535 to 0 (rollover)', () => {
    expect(encodeDataHeader(65535)).toEqual(bytes([0, 3, 0xff, 0xff]));
    expect(encodeDataHeader(65536)).toEqual(bytes([0, 3, 0, 0]));
    expect(encodeDataHeader(65537)).toEqual(bytes([0, 3, 0, 1]));
    expect(encodeAck(65536)).toEqual(bytes([0, 4, 0, 0]));
  });

  it('round-trips through decodePacket', () => {
    const opts = [
      { name: 'blksize', value: '1468' },
      { name: 'windowsize', value: '16' },
    ];
    expect(decodePacket(encodeRequest('RRQ', 'dir/ü.bin', 'octet', opts))).toEqual({
      ok: true,
      packet: { op: 'RRQ', filename: 'dir/ü.bin', mode: 'octet', options: opts },
    });
    expect(decodePacket(encodeData(3, Buffer.alloc(0)))).toEqual({ ok: true, packet: { op: 'DATA', block: 3, data: Buffer.alloc(0) } });
  });
});
