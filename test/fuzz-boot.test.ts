// Hostile input, fuzzed (issue #12 item 13): GET /boot/:mac through the real fastify app, with fast-check's
// MAC-ish path segments and query strings (arch, platform, uuid, junk), 10,000 requests from a fixed seed.
// test/boot-fuzz.test.ts checks that no script line leaves a loose character set; this one pins the script:
// a 200 is exactly the discovery script for the MAC the path names, so nothing of the query, and nothing of
// the path but the normalised MAC, can reach iPXE. A failure shrinks to a minimal request.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { MachineRecord } from '../schemas/types.js';
import { validateAgainst } from '../schemas/validate.js';
import { MACHINES, machineKey } from '../store/keys.js';
import { SEEN, type SeenRecord } from '../boot/observe.js';
import { fuzzServer, macLike, queryString, type FuzzServer } from './fuzz-arbitraries.js';

const RUNS = 10_000;
const BASE = 'http://10.0.0.1:8080';
/** The renderer's value set (boot/ipxe.ts SAFE): what a value may hold once it is in a script. */
const SAFE = /^[A-Za-z0-9._:/?=&%@+,~-]*$/;
const MEMORABLE = /^(?:[A-Z][a-z]+){4}\d*$/;

/**
 * The whole discovery script (boot/ipxe.test.ts spells the same one out): the only 200 a Discovered machine
 * gets. Its first request is answered before the record exists, so without a name.
 */
function discoveryScript(mac: string, name: string | undefined): string {
  return `#!ipxe
# Dragonfly: discovery for ${mac}${name === undefined ? '' : ` (${name})`}
kernel ${BASE}/mage/vmlinuz dragonfly.url=${BASE} dragonfly.mac=${mac} console=tty0 console=ttyS0,115200 initrd=initrd || goto failed
initrd --name initrd ${BASE}/mage/initrd || goto failed
boot || goto failed
:failed
echo Dragonfly: could not boot Mage; retrying in 10 seconds
sleep 10
chain --autofree ${BASE}/boot.ipxe
`;
}

/** Our own reading of the path segment (schemas/mac.ts has the product's): six hex pairs, one separator, a NIC's address. */
function expectedMac(segment: string): string | undefined {
  if (!/^[0-9a-f]{2}([:-])[0-9a-f]{2}(?:\1[0-9a-f]{2}){4}$/i.test(segment)) return undefined;
  const mac = segment.toLowerCase().replaceAll('-', ':');
  return mac === '00:00:00:00:00:00' || (parseInt(mac.slice(0, 2), 16) & 1) === 1 ? undefined : mac;
}

let server: FuzzServer;
beforeAll(async () => {
  server = await fuzzServer();
});
afterAll(async () => {
  await server?.close();
});

describe('GET /boot/:mac under hostile input (fast-check)', () => {
  it('10,000 MAC-ish paths with random query strings: 200 or 4xx, and a 200 is exactly the discovery script of the MAC named', async () => {
    const { app, store } = server;
    const statuses = new Map<number, number>();
    /** Every refusal body: a fixed few, so nothing of the request is echoed in one. */
    const refusals = new Set<string>();
    /** MACs answered before (the store is shared by every run, shrinking included). */
    const known = new Set<string>();
    await fc.assert(
      fc.asyncProperty(macLike({ pool: 500 }), fc.constantFrom('encoded', 'encoded', 'raw'), queryString, async (segment, how, query) => {
        // Encoded, the segment reaches the route as it is; raw, it is what a careless client puts on the wire
        // (printable ASCII only: a request line holds nothing else).
        const encoded = how === 'encoded';
        const inPath = encoded ? encodeURIComponent(segment.replace(/[\uD800-\uDFFF]/g, '?')) : segment.replace(/[^\x21-\x7e]/g, '');
        const res = await app.inject({ method: 'GET', url: `/boot/${inPath}${query}` });
        statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
        expect([200, 400, 404]).toContain(res.statusCode);
        if (res.statusCode !== 200) {
          expect(res.json().error.code).toMatch(/^DF_ERR_[A-Z_]+$/);
          refusals.add(res.body);
          if (encoded) expect(expectedMac(segment.replace(/[\uD800-\uDFFF]/g, '?'))).toBeUndefined();
          return;
        }
        // A 200 names one NIC's MAC, normalised; when the path was encoded, exactly the one it spelled.
        const mac = /^# Dragonfly: discovery for ((?:[0-9a-f]{2}:){5}[0-9a-f]{2})(?: \(|$)/m.exec(res.body)?.[1];
        expect(mac).toBeDefined();
        expect(expectedMac(mac!)).toBe(mac);
        if (encoded) expect(mac).toBe(expectedMac(segment));
        const rec = await store.read((s) => s.get<MachineRecord>(machineKey(mac!))?.value);
        expect(rec?.memorableName).toMatch(MEMORABLE);
        expect(res.body).toBe(discoveryScript(mac!, known.has(mac!) ? rec!.memorableName : undefined));
        known.add(mac!);
        // Belt and braces: each line holds fixed text and SAFE values only (no `${`, `;` or `||` from input).
        for (const word of res.body.split(/[\n ]/)) {
          if (!['#!ipxe', '#', 'Dragonfly:', ';', '||', 'Mage;'].includes(word) && !/^\(.*\)$/.test(word)) expect(word).toMatch(SAFE);
        }
        expect(res.headers['content-type']).toBe('text/plain; charset=utf-8');
      }),
      { numRuns: RUNS, seed: 0xb007001 },
    );
    // Both sides were exercised, and refusals never carry the request: a handful of fixed bodies.
    expect(statuses.get(200) ?? 0).toBeGreaterThan(RUNS / 5);
    expect((statuses.get(400) ?? 0) + (statuses.get(404) ?? 0)).toBeGreaterThan(RUNS / 5);
    expect([...refusals].length).toBeLessThanOrEqual(6);

    // What the store holds afterwards: every machine record valid, every sighting's client facts in their sets.
    const { machines, seen } = await store.read((s) => ({ machines: s.list<MachineRecord>(MACHINES), seen: s.list<SeenRecord>(SEEN) }));
    expect(machines.length).toBeGreaterThan(RUNS / 10);
    for (const m of machines) {
      expect(validateAgainst('machineRecord', m.value), m.key).toEqual([]);
      expect(expectedMac(m.value.mac)).toBe(m.value.mac);
    }
    for (const { value: s } of seen) {
      if (s.arch !== undefined) expect(s.arch).toMatch(/^[a-z0-9_]{1,16}$/);
      if (s.platform !== undefined) expect(s.platform).toMatch(/^[a-z]{1,8}$/);
      if (s.uuid !== undefined) expect(s.uuid).toMatch(/^[0-9a-f-]{32,36}$/);
    }
    expect((await app.inject({ url: '/healthz' })).statusCode).toBe(200);
  });
});
