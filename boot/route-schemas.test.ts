// Every agent and API route refuses a request that fails its schema before its handler runs: the answer is
// the code and status the route's own checks gave, and the store is not even read.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildServer } from './server.js';
import { workflowToken } from './tokens.js';
import { compileRequestSchema, def } from './route-schemas.js';
import { REQUEST_HINT } from './http-errors.js';
import { applyPlan } from '../reconciler/apply.js';
import { loadFleet } from '../reconciler/load.js';
import { readObserved } from '../reconciler/observed.js';
import { planFleet } from '../reconciler/plan.js';
import { oneMachineFleetYaml } from '../reconciler/test-builders.js';
import { ERRORS, type ErrorCode } from '../schemas/errors.js';
import type { Workflow } from '../schemas/types.js';
import { LmdbStore } from '../store/lmdb.js';
import type { Store } from '../store/store.js';

const MAC = '52:54:00:ab:cd:01';
const SECRET = Buffer.alloc(32, 5);
const MAGE_SECRET = 'b2'.repeat(32);
const HARDWARE = { disks: [{ name: 'vda', path: '/dev/vda', sizeBytes: 2 ** 31 }], nics: [{ name: 'eth0', mac: MAC }] };
const ADMIN = { authorization: 'Bearer admin-token' };
const CLAIMANT = { authorization: `Bearer ${MAGE_SECRET}` };

let dir: string;
let store: LmdbStore;
let app: FastifyInstance;
let wf: string;
/** The store methods called since the last reset: a handler that ran would have read the store. */
const calls: string[] = [];

/** The store, with every method call written down. */
function recorded(inner: Store): Store {
  return new Proxy(inner, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target) as unknown;
      if (typeof value !== 'function') return value;
      return (...args: unknown[]) => {
        calls.push(String(prop));
        return (value as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-route-schemas-'));
  store = LmdbStore.open(dir);
  app = await buildServer({ store: recorded(store), secret: SECRET, serverUrl: 'http://10.0.0.1:8080', apiToken: 'admin-token', timeoutSweepMs: 0 });
  await app.ready();
  // A machine with its hardware, in git, with a workflow that its Mage has claimed.
  expect((await app.inject({ method: 'POST', url: '/api/v1/agent/register', payload: { mac: MAC, hardware: HARDWARE } })).statusCode).toBe(200);
  const { fleet } = loadFleet([{ path: 'fleet.yaml', text: oneMachineFleetYaml('web-01', MAC) }]);
  [wf] = (await applyPlan(store, planFleet(fleet!, await readObserved(store)), fleet!, { user: 'test', source: 'cli' })).workflows as [string];
  const claim = await app.inject({ method: 'POST', url: `/api/v1/agent/workflows/${wf}/claim`, headers: { authorization: `Bearer ${workflowToken(SECRET, wf)}` }, payload: { secret: MAGE_SECRET } });
  expect(claim.statusCode).toBe(200);
});
afterAll(async () => {
  await app?.close();
  await store?.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

interface Case {
  route: string;
  method?: 'GET' | 'POST';
  url: () => string;
  headers?: Record<string, string> | (() => Record<string, string>);
  payload?: unknown;
  status: number;
  code: ErrorCode;
  message?: string | RegExp;
}

const CASES: Case[] = [
  // The agent API: bodies are JSON as sent (no coercion, no unknown fields), ids that cannot exist are 404.
  { route: 'POST /api/v1/agent/register', url: () => '/api/v1/agent/register', payload: { mac: MAC, hardware: HARDWARE, extra: 1 }, status: 400, code: 'DF_ERR_BAD_REQUEST', message: 'body must NOT have additional properties' },
  { route: 'POST /api/v1/agent/register', url: () => '/api/v1/agent/register', payload: { mac: MAC, hardware: HARDWARE, waitSeconds: '5' }, status: 400, code: 'DF_ERR_BAD_REQUEST', message: '/waitSeconds must be integer' },
  { route: 'POST /api/v1/agent/workflows/:id/claim', url: () => '/api/v1/agent/workflows/WF-1/claim', headers: { authorization: `Bearer ${workflowToken(SECRET, 'WF-1')}` }, payload: { secret: MAGE_SECRET }, status: 404, code: 'DF_ERR_NOT_FOUND', message: 'no such workflow' },
  { route: 'POST /api/v1/agent/workflows/:id/claim', url: () => `/api/v1/agent/workflows/${wf}/claim`, headers: () => ({ authorization: `Bearer ${workflowToken(SECRET, wf)}` }), payload: { secret: 'B2'.repeat(32) }, status: 400, code: 'DF_ERR_BAD_REQUEST', message: /^\/secret must match pattern/ },
  { route: 'GET /api/v1/agent/workflows/:id', method: 'GET', url: () => '/api/v1/agent/workflows/wf-..', headers: CLAIMANT, status: 404, code: 'DF_ERR_NOT_FOUND', message: 'no such workflow' },
  { route: 'POST /api/v1/agent/workflows/:id/actions/:index', url: () => `/api/v1/agent/workflows/${wf}/actions/1001`, headers: CLAIMANT, payload: { state: 'running' }, status: 404, code: 'DF_ERR_NOT_FOUND', message: 'no such action' },
  { route: 'POST /api/v1/agent/workflows/:id/actions/:index', url: () => `/api/v1/agent/workflows/wf-/actions/0`, headers: CLAIMANT, payload: { state: 'running' }, status: 404, code: 'DF_ERR_NOT_FOUND', message: 'no such workflow' },
  { route: 'POST /api/v1/agent/workflows/:id/actions/:index', url: () => `/api/v1/agent/workflows/${wf}/actions/0`, headers: CLAIMANT, payload: { state: 'done' }, status: 400, code: 'DF_ERR_BAD_REQUEST', message: '/state must be equal to one of the allowed values' },
  { route: 'POST /api/v1/agent/workflows/:id/finish', url: () => `/api/v1/agent/workflows/${wf}/finish`, headers: CLAIMANT, payload: { state: 'succeeded', percent: 100 }, status: 400, code: 'DF_ERR_BAD_REQUEST', message: 'body must NOT have additional properties' },
  { route: 'POST /api/v1/agent/workflows/:id/finish', url: () => `/api/v1/agent/workflows/${wf}/finish`, headers: CLAIMANT, status: 400, code: 'DF_ERR_BAD_REQUEST', message: 'body must be object' },
  // The read and admin API (with the admin token: the token is checked first).
  { route: 'GET /api/v1/machines', method: 'GET', url: () => '/api/v1/machines?limit=0', headers: ADMIN, status: 400, code: 'DF_ERR_BAD_REQUEST', message: 'query parameter limit must be >= 1' },
  { route: 'GET /api/v1/machines', method: 'GET', url: () => '/api/v1/machines?after=web-01', headers: ADMIN, status: 400, code: 'DF_ERR_BAD_REQUEST', message: 'query parameter after must match format "mac"' },
  { route: 'GET /api/v1/workflows', method: 'GET', url: () => '/api/v1/workflows?limit=5001', headers: ADMIN, status: 400, code: 'DF_ERR_BAD_REQUEST', message: 'query parameter limit must be <= 5000' },
  { route: 'GET /api/v1/workflows', method: 'GET', url: () => `/api/v1/workflows?after=${MAC}`, headers: ADMIN, status: 400, code: 'DF_ERR_BAD_REQUEST', message: /^query parameter after must match pattern/ },
  { route: 'POST /api/v1/workflows/:id/cancel', url: () => '/api/v1/workflows/wf-%20/cancel', headers: ADMIN, status: 404, code: 'DF_ERR_NOT_FOUND', message: 'no such workflow' },
  { route: 'GET /api/v1/events', method: 'GET', url: () => '/api/v1/events?since=-1', headers: ADMIN, status: 400, code: 'DF_ERR_BAD_REQUEST', message: /^query parameter since must match pattern/ },
  { route: 'GET /api/v1/events', method: 'GET', url: () => '/api/v1/events', headers: { ...ADMIN, 'last-event-id': '1e3' }, status: 400, code: 'DF_ERR_BAD_REQUEST', message: /^header last-event-id must match pattern/ },
  // And the boot script's MAC.
  { route: 'GET /boot/:mac', method: 'GET', url: () => '/boot/52:54:00:ab:cd:0g', status: 400, code: 'DF_ERR_BAD_MAC', message: 'not a MAC address' },
];

describe('route schemas', () => {
  it.each(CASES.map((c) => [`${c.route}: ${c.message}`, c] as const))('%s', async (_name, c) => {
    const before = { revision: await store.read((s) => s.revision), workflow: await store.read((s) => s.get<Workflow>(`workflows/${wf}`)!.value) };
    calls.length = 0;
    const r = await app.inject({ method: c.method ?? 'POST', url: c.url(), ...(c.headers ? { headers: typeof c.headers === 'function' ? c.headers() : c.headers } : {}), ...(c.payload !== undefined ? { payload: c.payload as object } : {}) });
    expect(r.statusCode, r.body).toBe(c.status);
    const { error } = r.json() as { error: { code: string; message: string; hint: string } };
    expect(error.code).toBe(c.code);
    if (typeof c.message === 'string') expect(error.message).toBe(c.message);
    else if (c.message) expect(error.message).toMatch(c.message);
    // A body is checked against schemas/agent.schema.json; a path, query or header against docs/api.md.
    expect(error.hint).toBe(c.code === 'DF_ERR_BAD_REQUEST' && /^(query|header)/.test(error.message) ? REQUEST_HINT : ERRORS[c.code].hint);
    // Refused before the handler: the store was not read, let alone written.
    expect(calls).toEqual([]);
    expect(await store.read((s) => s.revision)).toBe(before.revision);
    expect(await store.read((s) => s.get<Workflow>(`workflows/${wf}`)!.value)).toEqual(before.workflow);
  });

  it('covers every agent and API route that takes input', () => {
    const routes = new Set(CASES.map((c) => c.route));
    for (const r of ['POST /api/v1/agent/register', 'POST /api/v1/agent/workflows/:id/claim', 'GET /api/v1/agent/workflows/:id', 'POST /api/v1/agent/workflows/:id/actions/:index', 'POST /api/v1/agent/workflows/:id/finish', 'GET /api/v1/machines', 'GET /api/v1/workflows', 'POST /api/v1/workflows/:id/cancel', 'GET /api/v1/events']) {
      expect(routes, r).toContain(r);
    }
  });

  it('checks the token before the query: without one, a malformed query is 401', async () => {
    for (const url of ['/api/v1/machines?limit=0', '/api/v1/workflows?after=x', '/api/v1/events?since=x']) {
      const r = await app.inject({ url });
      expect(r.statusCode, url).toBe(401);
      expect(r.json().error.code).toBe('DF_ERR_UNAUTHORIZED');
    }
    expect((await app.inject({ method: 'POST', url: '/api/v1/workflows/nope/cancel', headers: { authorization: 'Bearer read-only' } })).statusCode).toBe(401);
  });

  it('reads numbers in paths and query strings as numbers, and nothing else', async () => {
    calls.length = 0;
    const page = await app.inject({ url: '/api/v1/machines?limit=1', headers: ADMIN });
    expect(page.statusCode).toBe(200);
    expect(page.json().items).toHaveLength(1);
    expect(calls.length, 'the recorded store sees a handler that runs').toBeGreaterThan(0);
    const report = await app.inject({ method: 'POST', url: `/api/v1/agent/workflows/${wf}/actions/0`, headers: CLAIMANT, payload: { state: 'running', percent: 10 } });
    expect(report.json()).toEqual({ ok: true, state: 'running' });
    // A body's number is a JSON number: '10' is refused, not read as 10.
    const text = await app.inject({ method: 'POST', url: `/api/v1/agent/workflows/${wf}/actions/0`, headers: CLAIMANT, payload: { state: 'running', percent: '10' } });
    expect(text.json().error).toMatchObject({ code: 'DF_ERR_BAD_REQUEST', message: '/percent must be number' });
  });

  it('refuses a route schema written inline: schemas live in schemas/', () => {
    const compile = (schema: unknown) => compileRequestSchema({ schema, method: 'GET', url: '/x', httpPart: 'querystring' });
    expect(() => compile({ type: 'object', properties: { limit: { type: 'integer' } } })).toThrow(/not an inline schema/);
    expect(() => compile({ ...def('api', 'MachinesQuery'), description: 'x' })).toThrow(/not an inline schema/);
    expect(() => compile({ $ref: 'https://dragonfly.computer/schemas/api.schema.json#/$defs/Nope' })).toThrow();
    expect(compile(def('api', 'MachinesQuery'))).toBeTypeOf('function');
  });
});
