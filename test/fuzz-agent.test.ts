// Hostile input, fuzzed (issue #12 item 13): the Mage agent API through the real fastify app, with fast-check
// bodies (any JSON, deep nesting, huge strings within the 256 KiB limit, wrong types, extra fields, near-valid
// reports) and Authorization headers (none, malformed, random, and real credentials used where they must not
// work). Fixed seeds, 10,000 requests per property; a failure shrinks to a minimal request.
// Invariants: never a 5xx; a 200 is a schema-valid answer; a workflow moves only for the credential that owns
// it (docs/security.md); and what the store holds afterwards passes its schemas.
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { workflowToken } from '../boot/tokens.js';
import { applyPlan } from '../reconciler/apply.js';
import { loadFleet } from '../reconciler/load.js';
import { readObserved } from '../reconciler/observed.js';
import { planFleet } from '../reconciler/plan.js';
import { machineYaml, oneMachineFleetYaml } from '../reconciler/test-builders.js';
import type { HardwareReport, MachineRecord, Workflow } from '../schemas/types.js';
import { validateAgainst, validateDefinition } from '../schemas/validate.js';
import { MACHINES, WORKFLOWS, machineKey } from '../store/keys.js';
import { anyJson, authorization, bodyText, contentType, fuzzServer, hostileText, macLike, type FuzzServer } from './fuzz-arbitraries.js';

const RUNS = 10_000;
const SECRET = Buffer.alloc(32, 9); // fuzzServer's
const MAC_PENDING = '52:54:00:fa:00:01';
const MAC_CLAIMED = '52:54:00:fa:00:02';
const MAGE_IP = '10.0.0.21';
const MAGE_SECRET = 'a1'.repeat(32);
const disk = (name: string, sizeBytes: number, serial: string) => ({ name, path: `/dev/${name}`, sizeBytes, serial, rotational: false, removable: false, table: 'none' as const });
const hardwareOf = (mac: string): HardwareReport => ({ disks: [disk('nvme0n1', 500e9, `S-${mac}`)], nics: [{ name: 'eth0', mac, link: true }] });

let server: FuzzServer;
/** A pending workflow nobody has claimed, and one claimed by MAGE_SECRET from MAGE_IP. */
let wfPending: string;
let wfClaimed: string;

const inject = (opts: { method: 'GET' | 'POST'; url: string; ip?: string; auth?: string | undefined; type?: string | undefined; body?: string }) =>
  server.app.inject({
    method: opts.method,
    url: opts.url,
    remoteAddress: opts.ip ?? '10.0.0.66',
    headers: { ...(opts.auth !== undefined ? { authorization: opts.auth } : {}), ...(opts.type !== undefined ? { 'content-type': opts.type } : {}) },
    ...(opts.body !== undefined ? { payload: opts.body } : {}),
  });

const workflows = () => server.store.read((s) => s.list<Workflow>(WORKFLOWS).map((w) => w.value));
/** The revision that last wrote each workflow and each of the two machines: equal revisions, nothing written. */
const revisions = () =>
  server.store.read((s) => [...s.list(WORKFLOWS), ...[MAC_PENDING, MAC_CLAIMED].map((m) => s.get(machineKey(m))!)].map((v) => `${v.key}@${v.modRevision}`).join(' '));
const machine = (mac: string) => server.store.read((s) => s.get<MachineRecord>(machineKey(mac))?.value);

beforeAll(async () => {
  server = await fuzzServer();
  // Two machines in git with their hardware reported, an apply that creates their workflows, and the second
  // workflow claimed by its Mage, as test/security.test.ts does it.
  for (const mac of [MAC_PENDING, MAC_CLAIMED]) {
    const r = await inject({ method: 'POST', url: '/api/v1/agent/register', ip: MAGE_IP, type: 'application/json', body: JSON.stringify({ mac, hardware: hardwareOf(mac) }) });
    expect(r.statusCode).toBe(200);
  }
  const { fleet } = loadFleet([{ path: 'fleet.yaml', text: `${machineYaml('db-02', MAC_CLAIMED, 'role: db')}---\n${oneMachineFleetYaml('db-01', MAC_PENDING)}` }]);
  const plan = planFleet(fleet!, await readObserved(server.store));
  await applyPlan(server.store, plan, fleet!, { user: 'test', source: 'cli' });
  const byMac = new Map((await workflows()).map((w) => [w.mac, w.id]));
  wfPending = byMac.get(MAC_PENDING)!;
  wfClaimed = byMac.get(MAC_CLAIMED)!;
  expect(wfPending).toMatch(/^wf-/);
  expect(wfClaimed).toMatch(/^wf-/);
  const claim = await inject({ method: 'POST', url: `/api/v1/agent/workflows/${wfClaimed}/claim`, ip: MAGE_IP, auth: `Bearer ${workflowToken(SECRET, wfClaimed)}`, type: 'application/json', body: JSON.stringify({ secret: MAGE_SECRET }) });
  expect(claim.statusCode).toBe(200);
});
afterAll(async () => {
  await server?.close();
});

// ---- bodies ----

/** Any Unicode, hostile or not, up to `max` code units: what a schema lets through as a free-text field. */
const freeText = (max: number) => fc.oneof(hostileText(Math.min(max, 60)), fc.string({ maxLength: max, unit: 'grapheme' })).map((t) => t.slice(0, max));
const realMac = fc.array(fc.nat(255), { minLength: 6, maxLength: 6 }).chain((b) => fc.mixedCase(fc.constantFrom(b.map((x) => x.toString(16).padStart(2, '0')).join(':'), b.map((x) => x.toString(16).padStart(2, '0')).join('-'))));

/** A hardware report the schema accepts, with hostile text wherever the schema allows free text. */
const validHardware = fc.record(
  {
    disks: fc.array(
      fc.record(
        {
          name: fc.stringMatching(/^[A-Za-z0-9_.:-]{1,64}$/),
          path: fc.stringMatching(/^[A-Za-z0-9_:-]{1,20}$/).map((n) => `/dev/${n}`),
          sizeBytes: fc.oneof(fc.nat(), fc.maxSafeNat()),
          model: freeText(256),
          serial: freeText(256),
          wwn: freeText(256),
          rotational: fc.boolean(),
          removable: fc.boolean(),
          transport: freeText(32),
          table: fc.constantFrom('gpt', 'mbr', 'none'),
          partitions: fc.array(fc.record({ name: freeText(64), sizeBytes: fc.nat(), fstype: freeText(32), label: freeText(128) }, { requiredKeys: ['name'] }), { maxLength: 3 }),
          fstype: freeText(32),
        },
        { requiredKeys: ['name', 'sizeBytes'] },
      ),
      { maxLength: 4 },
    ),
    nics: fc.array(fc.record({ name: freeText(64), mac: realMac, link: fc.boolean(), speedMbps: fc.integer(), driver: freeText(64) }, { requiredKeys: ['mac'] }), { maxLength: 3 }),
    cpu: fc.record({ model: freeText(256), cores: fc.nat(512), threads: fc.nat(1024) }, { requiredKeys: [] }),
    memoryBytes: fc.nat(),
    dmi: fc.record({ vendor: freeText(256), product: freeText(256), serial: freeText(256), uuid: freeText(64) }, { requiredKeys: [] }),
  },
  { requiredKeys: ['disks', 'nics'] },
);

/** One step away from valid: a field of the wrong type, out of range, too long, or a key the schema does not know. */
function perturbed<T extends Record<string, unknown>>(valid: fc.Arbitrary<T>): fc.Arbitrary<unknown> {
  const wrong = fc.oneof(anyJson, fc.constantFrom(-1, 1.5, 1e308, '', 'x'.repeat(300), null, [], {}, '../../etc/passwd', '/dev/../sda', '${disk}'));
  return fc.oneof(
    { weight: 3, arbitrary: valid },
    { weight: 1, arbitrary: fc.tuple(valid, fc.oneof(fc.constantFrom('extra', '__proto__', 'constructor'), fc.string()), anyJson).map(([v, k, x]) => ({ ...v, [k]: x })) },
    { weight: 1, arbitrary: fc.tuple(valid, fc.nat(), wrong).map(([v, i, x]) => { const keys = Object.keys(v); return keys.length ? { ...v, [keys[i % keys.length]!]: x } : v; }) },
    { weight: 1, arbitrary: fc.tuple(valid, fc.nat()).map(([v, i]) => { const keys = Object.keys(v); const out: Record<string, unknown> = { ...v }; if (keys.length) delete out[keys[i % keys.length]!]; return out; }) },
  );
}

const hardware: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: validHardware },
  { weight: 1, arbitrary: perturbed(validHardware) },
  { weight: 1, arbitrary: fc.tuple(validHardware, fc.nat(), perturbed(validHardware.map((h) => (h.disks[0] ?? { name: 'sda', sizeBytes: 1 }) as Record<string, unknown>))).map(([h, _i, d]) => ({ ...h, disks: [d, ...h.disks] })) },
);

/** A valid non-zero waitSeconds (a perturbation can make one) becomes 0. */
function noLongPoll(body: unknown): unknown {
  const w = (body as { waitSeconds?: unknown } | null)?.waitSeconds;
  return typeof w === 'number' && Number.isInteger(w) && w > 0 && w <= 60 ? { ...(body as object), waitSeconds: 0 } : body;
}

/**
 * RegisterRequest as Mage sends it, and near misses. waitSeconds is only ever 0 or invalid: a valid non-zero
 * one holds the answer for real (a long poll), which a fuzz run cannot wait for.
 */
const registerBody: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 1, arbitrary: anyJson },
  {
    weight: 6,
    arbitrary: perturbed(
      fc.record(
        {
          mac: fc.oneof(macLike({ pool: 200 }), fc.constantFrom(MAC_PENDING, MAC_CLAIMED)),
          hardware,
          workflow: fc.oneof(fc.constantFrom('wf-x', ''), fc.stringMatching(/^wf-[a-z0-9-]{1,80}$/)), // '' becomes a real id below
          agentVersion: freeText(64),
          waitSeconds: fc.constant(0),
        },
        { requiredKeys: ['mac', 'hardware'] },
      ),
    ).map(noLongPoll),
  },
);
const withRealWorkflowIds = (body: unknown): unknown => {
  if (body && typeof body === 'object' && 'workflow' in body && (body as { workflow: unknown }).workflow === '') {
    return { ...body, workflow: (body as { mac?: unknown }).mac === MAC_CLAIMED ? wfClaimed : wfPending };
  }
  return body;
};

const actionBody: fc.Arbitrary<unknown> = fc.oneof(
  anyJson,
  fc.record(
    {
      state: fc.oneof(fc.constantFrom('running', 'succeeded', 'failed', 'pending', 'RUNNING'), hostileText(10)),
      percent: fc.oneof(fc.double(), fc.integer({ min: -5, max: 105 })),
      bytes: fc.oneof(fc.nat(), fc.constantFrom(-1, 0.5)),
      rate: fc.double(),
      message: fc.oneof(hostileText(100), fc.nat(5000).map((n) => 'm'.repeat(n))),
      log: fc.array(hostileText(50), { maxLength: 210 }),
      extra: anyJson,
    },
    { requiredKeys: ['state'] },
  ),
);
const finishBody: fc.Arbitrary<unknown> = fc.oneof(
  anyJson,
  fc.record(
    {
      state: fc.oneof(fc.constantFrom('succeeded', 'failed', 'running', 'timed-out'), hostileText(10)),
      error: fc.oneof(hostileText(100), fc.nat(5000).map((n) => 'e'.repeat(n))),
      code: fc.oneof(fc.constantFrom('DF_ERR_DISK_MISMATCH', 'DF_WARN_X', 'DF_ERR_', 'df_err_x'), hostileText(20)),
      hardware,
      extra: anyJson,
    },
    { requiredKeys: ['state'] },
  ),
);
const claimBody: fc.Arbitrary<unknown> = fc.oneof(
  anyJson,
  fc.record({ secret: fc.oneof(fc.constantFrom('ab'.repeat(32), MAGE_SECRET, 'AB'.repeat(32), 'ab'.repeat(31)), hostileText(70)), extra: anyJson }, { requiredKeys: ['secret'] }),
);

/** The token a header carries, read as RFC 7235 and boot/auth.ts read it. */
const bearer = (h: string | undefined) => (h === undefined ? undefined : /^bearer +(\S+) *$/i.exec(h)?.[1]);

// ---- after a run: what the store holds is valid ----

async function expectStoreValid(): Promise<void> {
  const { machines, wfs } = await server.store.read((s) => ({ machines: s.list<MachineRecord>(MACHINES), wfs: s.list<Workflow>(WORKFLOWS) }));
  for (const m of machines) expect(validateAgainst('machineRecord', m.value), m.key).toEqual([]);
  for (const w of wfs) expect(validateAgainst('workflow', w.value), w.key).toEqual([]);
}

describe('the agent API under hostile input (fast-check)', () => {
  it('POST /api/v1/agent/register, 10,000 random bodies and headers: never 5xx, a 200 is a valid answer, no workflow moves, no hardware is replaced', async () => {
    const before = { workflows: await workflows(), pending: await machine(MAC_PENDING), claimed: await machine(MAC_CLAIMED) };
    const workflowRevisions = await server.store.read((s) => s.list(WORKFLOWS).map((v) => v.modRevision));
    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(
        bodyText(registerBody.map(withRealWorkflowIds)),
        contentType,
        authorization([workflowToken(SECRET, 'wf-x'), workflowToken(SECRET, wfPending), MAGE_SECRET]),
        fc.constantFrom(MAGE_IP, '10.0.0.66', '192.168.1.9'),
        async (body, type, auth, ip) => {
          const res = await inject({ method: 'POST', url: '/api/v1/agent/register', ip, auth, type, body });
          statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
          expect(res.statusCode, res.body.slice(0, 300)).toBeLessThan(500);
          const answer = res.json() as { instruction?: string; workflow?: string; error?: { code: string } };
          if (res.statusCode !== 200) {
            expect(answer.error?.code).toMatch(/^DF_ERR_[A-Z_]+$/);
            return;
          }
          expect(validateDefinition('agent', 'RegisterResponse', answer)).toEqual([]);
          // 'run' only for a Mage booted for the workflow: the unclaimed one's token, or the claimant's secret
          // from its address.
          if (answer.instruction === 'run') {
            const owner = answer.workflow === wfPending ? { token: workflowToken(SECRET, wfPending), ip } : { token: MAGE_SECRET, ip: MAGE_IP };
            expect({ workflow: answer.workflow, token: bearer(auth), ip }).toEqual({ workflow: answer.workflow === wfPending ? wfPending : wfClaimed, ...owner });
          }
          // Registration never moves a workflow (not one is written), nor replaces the hardware of a machine that has some.
          expect(await server.store.read((s) => s.list(WORKFLOWS).map((v) => v.modRevision))).toEqual(workflowRevisions);
          expect((await machine(MAC_PENDING))?.hardware).toEqual(before.pending?.hardware);
          expect((await machine(MAC_CLAIMED))?.hardware).toEqual(before.claimed?.hardware);
        },
      ),
      { numRuns: RUNS, seed: 0xa9e7001 },
    );
    expect(statuses.get(200) ?? 0).toBeGreaterThan(RUNS / 20);
    expect(statuses.get(400) ?? 0).toBeGreaterThan(RUNS / 5);
    expect(statuses.get(413) ?? 0).toBeGreaterThan(0);
    expect(await workflows()).toEqual(before.workflows);
    await expectStoreValid();
  });

  it('claim, actions, finish and GET of workflows, 10,000 random bodies and credentials that are not the owner\'s: never 5xx, never a 200, no workflow moves', async () => {
    const before = { workflows: await workflows(), pending: await machine(MAC_PENDING), claimed: await machine(MAC_CLAIMED), revisions: await revisions() };
    const statuses = new Map<number, number>();
    // Real credentials, used where they must not work: a workflow's token after its claim or on another
    // workflow, the claimant's secret from another address, a token for a workflow that does not exist.
    const credentials = [workflowToken(SECRET, wfPending), workflowToken(SECRET, wfClaimed), MAGE_SECRET, workflowToken(SECRET, 'wf-none')];
    const id = fc.oneof(
      { weight: 4, arbitrary: fc.constantFrom(wfPending, wfClaimed, 'wf-none') },
      { weight: 1, arbitrary: fc.oneof(hostileText(30), fc.stringMatching(/^wf-[a-z0-9-]{1,90}$/)) },
    );
    const call = fc.oneof(
      fc.record({ path: fc.constant('claim'), body: bodyText(claimBody) }),
      fc.record({ path: fc.oneof(fc.constantFrom('0', '1', '-1', '1001', '1e2', '0x1', ' 0'), hostileText(6)).map((i) => `actions/${encodeURIComponent(i)}`), body: bodyText(actionBody) }),
      fc.record({ path: fc.constant('finish'), body: bodyText(finishBody) }),
      fc.record({ path: fc.constant(''), body: fc.constant('') }),
    );
    await fc.assert(
      fc.asyncProperty(id, call, contentType, authorization(credentials), fc.constantFrom(MAGE_IP, '10.0.0.66'), async (wid, c, type, auth, ipAsked) => {
        const token = bearer(auth);
        // Keep every call unauthenticated: the pending workflow's own token may claim it (that is its
        // purpose), and the claimant's secret from its address may act on its workflow.
        const path = c.path === 'claim' && wid === wfPending && token === workflowToken(SECRET, wfPending) ? 'finish' : c.path;
        const ip = wid === wfClaimed && token === MAGE_SECRET ? '10.0.0.66' : ipAsked;
        const url = `/api/v1/agent/workflows/${encodeURIComponent(wid.replace(/[\uD800-\uDFFF]/g, '?'))}${path ? `/${path}` : ''}`;
        const res = await inject(path ? { method: 'POST', url, ip, auth, type, body: c.body } : { method: 'GET', url, ip, auth });
        statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
        expect(res.statusCode, res.body.slice(0, 300)).toBeLessThan(500);
        // The one 200 left: the claimant claiming again with its own secret (a lost answer), which changes nothing.
        if (res.statusCode === 200) expect({ path, wid, ip, token, body: JSON.parse(c.body) as unknown }).toMatchObject({ path: 'claim', wid: wfClaimed, ip: MAGE_IP, token: workflowToken(SECRET, wfClaimed), body: { secret: MAGE_SECRET } });
        else expect((res.json() as { error?: { code: string } }).error?.code).toMatch(/^DF_ERR_[A-Z_]+$/);
        // Nothing about the workflows or their machines was written.
        expect(await revisions()).toBe(before.revisions);
      }),
      { numRuns: RUNS, seed: 0xa9e7002 },
    );
    expect(statuses.get(401) ?? 0).toBeGreaterThan(RUNS / 10);
    expect(statuses.get(409) ?? 0).toBeGreaterThan(0);
    expect({ workflows: await workflows(), pending: await machine(MAC_PENDING), claimed: await machine(MAC_CLAIMED), revisions: await revisions() }).toEqual(before);
    await expectStoreValid();
  });

  it('the claimant\'s own calls with random bodies: never 5xx, and the workflow it moves stays schema-valid', async () => {
    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.record({ path: fc.constantFrom('actions/0', 'actions/1', 'actions/1000'), body: bodyText(actionBody) }),
          fc.record({ path: fc.constant('finish'), body: bodyText(finishBody) }),
        ),
        contentType,
        async (c, type) => {
          const res = await inject({ method: 'POST', url: `/api/v1/agent/workflows/${wfClaimed}/${c.path}`, ip: MAGE_IP, auth: `Bearer ${MAGE_SECRET}`, type, body: c.body });
          statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
          expect(res.statusCode, res.body.slice(0, 300)).toBeLessThan(500);
          const wf = await server.store.read((s) => s.get<Workflow>(`${WORKFLOWS}${wfClaimed}`)?.value);
          expect(validateAgainst('workflow', wf)).toEqual([]);
          expect(validateAgainst('machineRecord', await machine(MAC_CLAIMED))).toEqual([]);
        },
      ),
      { numRuns: 2_000, seed: 0xa9e7003 },
    );
    expect(statuses.get(400) ?? 0).toBeGreaterThan(0);
    await expectStoreValid();
  });
});
