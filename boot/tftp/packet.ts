// TFTP packets (RFC 1350 §5, RFC 2347 "Packet Formats" for options and the OACK): pure encode and decode.
// Decoding is total: any datagram yields either a packet or a typed DecodeError, never an exception.

/** RFC 1350 §5 opcodes, plus OACK from RFC 2347. */
export const OPCODE = { RRQ: 1, WRQ: 2, DATA: 3, ACK: 4, ERROR: 5, OACK: 6 } as const;

/** RFC 1350 appendix error codes, plus 8 from RFC 2347. */
export const TFTP_ERROR = {
  NOT_DEFINED: 0,
  FILE_NOT_FOUND: 1,
  ACCESS_VIOLATION: 2,
  DISK_FULL: 3,
  ILLEGAL_OPERATION: 4,
  UNKNOWN_TID: 5,
  FILE_EXISTS: 6,
  NO_SUCH_USER: 7,
  OPTION_REFUSED: 8,
} as const;

/** One option in request order; names are lower-cased (RFC 2347: option names are case-insensitive). */
export interface TftpOption {
  name: string;
  value: string;
}

/** RRQ or WRQ; `mode` is lower-cased (RFC 1350 §5: "netascii", "octet", "mail", in any case). */
export interface TftpRequest {
  op: 'RRQ' | 'WRQ';
  filename: string;
  mode: string;
  options: TftpOption[];
}

export type TftpPacket =
  | TftpRequest
  | { op: 'DATA'; block: number; data: Buffer }
  | { op: 'ACK'; block: number }
  | { op: 'ERROR'; code: number; message: string }
  | { op: 'OACK'; options: TftpOption[] };

export type DecodeErrorReason =
  | 'too-short'
  | 'unknown-opcode'
  | 'unterminated-string'
  | 'empty-filename'
  | 'bad-encoding';

export interface DecodeError {
  reason: DecodeErrorReason;
  /** The opcode when one could be read, so a caller can tell a broken request from noise. */
  opcode?: number;
  message: string;
}

export type DecodeResult = { ok: true; packet: TftpPacket } | { ok: false; error: DecodeError };

const utf8 = new TextDecoder('utf-8', { fatal: true });

/** Decode one datagram. Total: malformed input returns `{ ok: false }`. */
export function decodePacket(buf: Uint8Array): DecodeResult {
  if (buf.length < 2) return fail('too-short', undefined, `datagram of ${buf.length} bytes has no opcode`);
  const opcode = (buf[0]! << 8) | buf[1]!;
  switch (opcode) {
    case OPCODE.RRQ:
    case OPCODE.WRQ:
      return decodeRequest(buf, opcode);
    case OPCODE.DATA:
      // RFC 1350 §5: 2-byte opcode, 2-byte block, 0–512 (or blksize) bytes of data.
      if (buf.length < 4) return fail('too-short', opcode, 'DATA without a block number');
      return ok({ op: 'DATA', block: blockAt(buf), data: Buffer.from(buf.subarray(4)) });
    case OPCODE.ACK:
      // Bytes after the block number are ignored: some clients pad their ACKs.
      if (buf.length < 4) return fail('too-short', opcode, 'ACK without a block number');
      return ok({ op: 'ACK', block: blockAt(buf) });
    case OPCODE.ERROR: {
      if (buf.length < 4) return fail('too-short', opcode, 'ERROR without an error code');
      // RFC 1350 §5 asks for a NUL-terminated message; a missing NUL is tolerated so the code still reaches us.
      const end = buf.indexOf(0, 4);
      const message = decodeString(buf.subarray(4, end === -1 ? buf.length : end));
      return ok({ op: 'ERROR', code: blockAt(buf), message: message ?? '' });
    }
    case OPCODE.OACK: {
      const options = decodeOptions(buf, 2);
      return options.ok ? ok({ op: 'OACK', options: options.options }) : fail(options.reason, opcode, options.message);
    }
    default:
      return fail('unknown-opcode', opcode, `unknown opcode ${opcode}`);
  }
}

// RFC 1350 §5 + RFC 2347 Packet Formats: | opcode | filename | 0 | mode | 0 | opt1 | 0 | value1 | 0 | ... |
function decodeRequest(buf: Uint8Array, opcode: number): DecodeResult {
  const nameEnd = buf.indexOf(0, 2);
  if (nameEnd === -1) return fail('unterminated-string', opcode, 'filename is not NUL-terminated');
  const modeEnd = buf.indexOf(0, nameEnd + 1);
  if (modeEnd === -1) return fail('unterminated-string', opcode, 'mode is not NUL-terminated');
  const filename = decodeString(buf.subarray(2, nameEnd));
  if (filename === undefined) return fail('bad-encoding', opcode, 'filename is not valid UTF-8');
  if (filename === '') return fail('empty-filename', opcode, 'empty filename');
  const mode = (decodeString(buf.subarray(nameEnd + 1, modeEnd)) ?? '').toLowerCase();
  const options = decodeOptions(buf, modeEnd + 1);
  if (!options.ok) return fail(options.reason, opcode, options.message);
  return ok({ op: opcode === OPCODE.RRQ ? 'RRQ' : 'WRQ', filename, mode, options: options.options });
}

type OptionsResult = { ok: true; options: TftpOption[] } | { ok: false; reason: DecodeErrorReason; message: string };

// Options are NUL-terminated name/value pairs. Lenient where real clients are sloppy: empty names (NUL
// padding after the last option) end the list, a name without a value is dropped. A trailing fragment
// with no NUL at all is garbage, not a client quirk, and makes the packet malformed.
function decodeOptions(buf: Uint8Array, start: number): OptionsResult {
  const options: TftpOption[] = [];
  let pos = start;
  while (pos < buf.length) {
    const nameEnd = buf.indexOf(0, pos);
    if (nameEnd === -1) return { ok: false, reason: 'unterminated-string', message: 'option name is not NUL-terminated' };
    if (nameEnd === pos) break; // padding
    const valueEnd = buf.indexOf(0, nameEnd + 1);
    if (valueEnd === -1) {
      if (nameEnd + 1 === buf.length) break; // a name without a value at the very end
      return { ok: false, reason: 'unterminated-string', message: 'option value is not NUL-terminated' };
    }
    const name = decodeString(buf.subarray(pos, nameEnd));
    const value = decodeString(buf.subarray(nameEnd + 1, valueEnd));
    if (name === undefined || value === undefined) return { ok: false, reason: 'bad-encoding', message: 'option is not valid UTF-8' };
    options.push({ name: name.toLowerCase(), value });
    pos = valueEnd + 1;
  }
  return { ok: true, options };
}

function decodeString(bytes: Uint8Array): string | undefined {
  try {
    return utf8.decode(bytes);
  } catch {
    return undefined;
  }
}

const blockAt = (buf: Uint8Array) => (buf[2]! << 8) | buf[3]!;
const ok = (packet: TftpPacket): DecodeResult => ({ ok: true, packet });
const fail = (reason: DecodeErrorReason, opcode: number | undefined, message: string): DecodeResult => ({
  ok: false,
  error: opcode === undefined ? { reason, message } : { reason, opcode, message },
});

// ---- encoding ----

/** RRQ or WRQ (RFC 1350 §5), options appended as in RFC 2347 Packet Formats. */
export function encodeRequest(op: 'RRQ' | 'WRQ', filename: string, mode = 'octet', options: readonly TftpOption[] = []): Buffer {
  const parts = [filename, mode, ...options.flatMap((o) => [o.name, o.value])];
  return Buffer.concat([u16(op === 'RRQ' ? OPCODE.RRQ : OPCODE.WRQ), ...parts.map(cString)]);
}

/** The 4-byte DATA header (RFC 1350 §5); block numbers are taken modulo 2^16 (rollover wraps to 0). */
export function encodeDataHeader(block: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeUInt16BE(OPCODE.DATA, 0);
  b.writeUInt16BE(block & 0xffff, 2);
  return b;
}

export function encodeData(block: number, data: Uint8Array): Buffer {
  return Buffer.concat([encodeDataHeader(block), data]);
}

export function encodeAck(block: number): Buffer {
  return Buffer.concat([u16(OPCODE.ACK), u16(block & 0xffff)]);
}

export function encodeError(code: number, message: string): Buffer {
  return Buffer.concat([u16(OPCODE.ERROR), u16(code & 0xffff), cString(message)]);
}

/** RFC 2347 Packet Formats: | 6 | opt1 | 0 | value1 | 0 | ... | */
export function encodeOack(options: readonly TftpOption[]): Buffer {
  return Buffer.concat([u16(OPCODE.OACK), ...options.flatMap((o) => [cString(o.name), cString(o.value)])]);
}

function u16(n: number): Buffer {
  const b = Buffer.allocUnsafe(2);
  b.writeUInt16BE(n, 0);
  return b;
}

function cString(s: string): Buffer {
  return Buffer.concat([Buffer.from(s, 'utf8'), Buffer.from([0])]);
}
