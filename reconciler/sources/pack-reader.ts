// A minimal reader of git pack files (index v2), for trees and blobs: isomorphic-git inflates every object
// with pako and probes the file system (stat, a loose-object read, a readdir) for each one, which costs
// ~0.3 ms per object, so 10,000 files take seconds; this reads with native zlib from packs held in memory,
// each object checked against its oid. Loose or unusual objects are left to isomorphic-git (read() says
// undefined).
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';

const OBJ_TYPES = ['', 'commit', 'tree', 'blob', 'tag'] as const;
const OFS_DELTA = 6;
const REF_DELTA = 7;

interface Pack {
  name: string;
  /** N sorted 20-byte oids. */
  oids: Buffer;
  /** Offset of each oid in the pack. */
  offsets: Float64Array;
  fanout: Uint32Array;
  data: Buffer;
}

/** The packs of one repository's objects/pack folder, held in memory. */
export class PackSet {
  private readonly loaded = new Map<string, Pack>();

  constructor(private readonly dir: string) {}

  /** Load the packs that appeared since the last call (packs are immutable; new ones come with fetches). */
  async refresh(): Promise<this> {
    let names: string[];
    try {
      names = await fs.promises.readdir(this.dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return this;
      throw e;
    }
    for (const idx of names.filter((n) => n.endsWith('.idx'))) {
      const name = idx.slice(0, -4);
      if (this.loaded.has(name) || !names.includes(`${name}.pack`)) continue;
      const [idxBuf, data] = await Promise.all([fs.promises.readFile(path.join(this.dir, idx)), fs.promises.readFile(path.join(this.dir, `${name}.pack`))]);
      const pack = parseIndex(name, idxBuf, data);
      if (pack) this.loaded.set(name, pack);
    }
    return this;
  }

  /** A reading session: resolved delta bases are kept for its duration. */
  session(): PackSession {
    // Largest first: most lookups end in the first clone's pack. Small packs (one per fetch) cost
    // two fanout reads per lookup when they do not hold the oid's first byte.
    const packs = [...this.loaded.values()].sort((a, b) => b.offsets.length - a.offsets.length);
    const memo = new Map<string, { type: number; data: Buffer }>();
    let memoBytes = 0;
    const MEMO_LIMIT = 64 * 1024 * 1024;

    const locate = (oid: Buffer): { pack: Pack; offset: number } | undefined => {
      for (const pack of packs) {
        const first = oid[0]!;
        let lo = first === 0 ? 0 : pack.fanout[first - 1]!;
        let hi = pack.fanout[first]!;
        while (lo < hi) {
          const mid = (lo + hi) >>> 1;
          const c = pack.oids.compare(oid, 0, 20, mid * 20, mid * 20 + 20);
          if (c === 0) return { pack, offset: pack.offsets[mid]! };
          if (c < 0) lo = mid + 1; // pack oid < wanted
          else hi = mid;
        }
      }
      return undefined;
    };

    const readAt = (pack: Pack, offset: number, depth: number): { type: number; data: Buffer } => {
      const key = `${pack.name}:${offset}`;
      const hit = memo.get(key);
      if (hit) return hit;
      if (depth > 10_000) throw new Error('delta chain too deep');
      const d = pack.data;
      let p = offset;
      let c = d[p++]!;
      const type = (c >> 4) & 7;
      let size = c & 15;
      let shift = 4;
      while (c & 0x80) {
        c = d[p++]!;
        size += (c & 0x7f) * 2 ** shift;
        shift += 7;
      }
      let result: { type: number; data: Buffer };
      if (type === OFS_DELTA) {
        c = d[p++]!;
        let back = c & 0x7f;
        while (c & 0x80) {
          c = d[p++]!;
          back = (back + 1) * 128 + (c & 0x7f);
        }
        const base = readAt(pack, offset - back, depth + 1);
        result = { type: base.type, data: applyDelta(base.data, inflate(d, p, size)) };
      } else if (type === REF_DELTA) {
        const baseOid = d.subarray(p, p + 20);
        const where = locate(baseOid);
        if (!where) throw new Error(`delta base ${baseOid.toString('hex')} not in any pack`);
        const base = readAt(where.pack, where.offset, depth + 1);
        result = { type: base.type, data: applyDelta(base.data, inflate(d, p + 20, size)) };
      } else if (type >= 1 && type <= 4) {
        result = { type, data: inflate(d, p, size) };
      } else {
        throw new Error(`unknown pack object type ${type}`);
      }
      if (memoBytes < MEMO_LIMIT) {
        // Any object may be the base of a later one (chains are up to 50 deep).
        memo.set(key, result);
        memoBytes += result.data.length;
      }
      return result;
    };

    return {
      read(oid: string, type: 'blob' | 'tree'): Buffer | undefined {
        const raw = Buffer.from(oid, 'hex');
        if (raw.length !== 20) return undefined;
        try {
          const where = locate(raw);
          if (!where) return undefined;
          const obj = readAt(where.pack, where.offset, 0);
          if (OBJ_TYPES[obj.type] !== type) return undefined;
          // Content addressing: what we read must hash to the oid that named it.
          const sum = createHash('sha1').update(`${type} ${obj.data.length}\0`).update(obj.data).digest('hex');
          return sum === oid ? obj.data : undefined;
        } catch {
          return undefined; // isomorphic-git reads it instead (and reports what is wrong)
        }
      },
    };
  }
}

export interface PackSession {
  /** The object's content when it is packed, of this type, and hashes to its oid; else undefined. */
  read(oid: string, type: 'blob' | 'tree'): Buffer | undefined;
}

export interface TreeEntry {
  mode: string;
  path: string;
  oid: string;
  type: 'blob' | 'tree' | 'commit';
}

/** A raw tree object → entries, with modes canonicalised as isomorphic-git does; null when malformed. */
export function parseTree(data: Buffer): TreeEntry[] | null {
  const out: TreeEntry[] = [];
  let p = 0;
  while (p < data.length) {
    const space = data.indexOf(0x20, p);
    const nul = space === -1 ? -1 : data.indexOf(0, space + 1);
    if (space === -1 || nul === -1 || nul + 21 > data.length) return null;
    const rawMode = data.toString('latin1', p, space);
    const name = data.toString('utf8', space + 1, nul);
    if (!name || name.includes('/')) return null; // isomorphic-git then reports the unsafe name
    const oid = data.toString('hex', nul + 1, nul + 21);
    p = nul + 21;
    const m = Number.parseInt(rawMode, 8);
    let mode: string;
    let type: TreeEntry['type'];
    if ((m & 0o170000) === 0o040000) [mode, type] = ['040000', 'tree'];
    else if ((m & 0o170000) === 0o160000) [mode, type] = ['160000', 'commit'];
    else if ((m & 0o170000) === 0o120000) [mode, type] = ['120000', 'blob'];
    else if ((m & 0o170000) === 0o100000) [mode, type] = [m & 0o111 ? '100755' : '100644', 'blob'];
    else return null;
    out.push({ mode, path: name, oid, type });
  }
  return out;
}

function parseIndex(name: string, idx: Buffer, data: Buffer): Pack | undefined {
  // Version 2 only (git has written v2 since 1.5.2; isomorphic-git writes v2).
  if (idx.length < 8 + 256 * 4 || idx.readUInt32BE(0) !== 0xff744f63 || idx.readUInt32BE(4) !== 2) return undefined;
  if (data.length < 12 || data.toString('latin1', 0, 4) !== 'PACK') return undefined;
  const fanout = new Uint32Array(256);
  for (let i = 0; i < 256; i++) fanout[i] = idx.readUInt32BE(8 + i * 4);
  const n = fanout[255]!;
  const oidsAt = 8 + 256 * 4;
  const crcAt = oidsAt + n * 20;
  const offAt = crcAt + n * 4;
  const bigAt = offAt + n * 4;
  if (idx.length < bigAt + 40) return undefined;
  const offsets = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const o = idx.readUInt32BE(offAt + i * 4);
    offsets[i] = o & 0x80000000 ? Number(idx.readBigUInt64BE(bigAt + (o & 0x7fffffff) * 8)) : o;
  }
  return { name, oids: idx.subarray(oidsAt, crcAt), offsets, fanout, data };
}

function inflate(d: Buffer, at: number, size: number): Buffer {
  // Trailing bytes after the zlib stream (the rest of the pack) are ignored by inflateSync.
  const out = zlib.inflateSync(d.subarray(at), size > 0 ? { maxOutputLength: Math.max(size, 1) } : {});
  if (out.length !== size) throw new Error(`pack object inflated to ${out.length} bytes, expected ${size}`);
  return out;
}

function applyDelta(base: Buffer, delta: Buffer): Buffer {
  let p = 0;
  const varint = () => {
    let v = 0;
    let shift = 0;
    let c: number;
    do {
      c = delta[p++]!;
      v += (c & 0x7f) * 2 ** shift;
      shift += 7;
    } while (c & 0x80);
    return v;
  };
  const srcSize = varint();
  if (srcSize !== base.length) throw new Error(`delta expects a base of ${srcSize} bytes, got ${base.length}`);
  const out = Buffer.allocUnsafe(varint());
  let o = 0;
  while (p < delta.length) {
    const op = delta[p++]!;
    if (op & 0x80) {
      let off = 0;
      let len = 0;
      if (op & 0x01) off |= delta[p++]!;
      if (op & 0x02) off |= delta[p++]! << 8;
      if (op & 0x04) off |= delta[p++]! << 16;
      if (op & 0x08) off = (off | (delta[p++]! << 24)) >>> 0;
      if (op & 0x10) len |= delta[p++]!;
      if (op & 0x20) len |= delta[p++]! << 8;
      if (op & 0x40) len |= delta[p++]! << 16;
      if (len === 0) len = 0x10000;
      if (off + len > base.length || o + len > out.length) throw new Error('delta copy out of range');
      base.copy(out, o, off, off + len);
      o += len;
    } else if (op > 0) {
      if (o + op > out.length || p + op > delta.length) throw new Error('delta insert out of range');
      delta.copy(out, o, p, p + op);
      o += op;
      p += op;
    } else {
      throw new Error('delta opcode 0 is reserved');
    }
  }
  if (o !== out.length) throw new Error('delta result has the wrong size');
  return out;
}
