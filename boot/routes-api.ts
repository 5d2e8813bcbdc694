// The read API (machines, workflows, an SSE stream of changes; a read or admin token) and the admin calls
// (the admin token). Nothing here is open: hardware inventories and MACs are not public. The token is checked
// first (onRequest), then the path, query and headers against their schemas (boot/route-schemas.ts).
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { DragonflyError } from '../schemas/errors.js';
import { normalizeMac } from '../schemas/mac.js';
import type { MachineRecord, Workflow } from '../schemas/types.js';
import { MACHINES, WORKFLOWS, workflowKey } from '../store/keys.js';
import type { Snapshot } from '../store/store.js';
import { requireRole } from './auth.js';
import type { EventHub } from './event-hub.js';
import { seenKey, type SeenRecord } from './observe.js';
import { finishWorkflow, WorkflowStateError } from './workflow-progress.js';
import { publicWorkflow } from './public.js';
import type { BootServerDeps } from './deps.js';
import { def, refusing } from './route-schemas.js';

/** A page of the read API when the query names no limit (schemas/api.schema.json caps it). */
const DEFAULT_LIMIT = 500;

/** As schemas/api.schema.json's MachinesQuery and WorkflowsQuery, once checked. */
interface PageQuery {
  limit?: number;
  after?: string;
}

function pageOf(q: PageQuery): { limit: number; after: string | undefined } {
  return { limit: q.limit ?? DEFAULT_LIMIT, after: q.after };
}

/** One page of `prefix` at one snapshot: the items after `prefix + after`; `next` continues the listing. */
function listPage<T, R>(snap: Snapshot, prefix: string, page: { limit: number; after: string | undefined }, map: (value: T, modRevision: number) => R) {
  // One more than asked for tells whether there is a next page.
  const items = snap.list<T>(prefix, { ...(page.after !== undefined ? { after: prefix + page.after } : {}), limit: page.limit + 1 });
  const more = items.length > page.limit;
  if (more) items.pop();
  return {
    revision: snap.revision,
    items: items.map((r) => map(r.value, r.modRevision)),
    ...(more ? { next: items.at(-1)!.key.slice(prefix.length) } : {}),
  };
}

export const apiRoutes: FastifyPluginAsync<{ deps: BootServerDeps; hub: EventHub }> = async (app, { deps, hub }) => {
  // Hooks, so that a caller without the token learns nothing, not even that its query was malformed.
  const reader = { onRequest: async (req: FastifyRequest) => void requireRole(req, deps, 'read') };
  const admin = { onRequest: async (req: FastifyRequest) => void requireRole(req, deps, 'admin') };
  const read = <T>(fn: (snap: Snapshot) => T) => (deps.store.readSync ? deps.store.readSync(fn) : deps.store.read(fn));

  app.get<{ Querystring: PageQuery }>('/api/v1/machines', { schema: { querystring: def('api', 'MachinesQuery') }, ...reader }, async (req) => {
    const page = pageOf(req.query);
    return read((snap) =>
      listPage<MachineRecord, unknown>(snap, MACHINES, { ...page, ...(page.after ? { after: normalizeMac(page.after)! } : {}) }, (value, revision) => {
        const seen = snap.get<SeenRecord>(seenKey(value.mac))?.value;
        return { ...value, ...(seen ? { lastSeen: seen.lastSeen, firstSeen: seen.firstSeen } : {}), revision };
      }),
    );
  });

  app.get<{ Querystring: PageQuery }>('/api/v1/workflows', { schema: { querystring: def('api', 'WorkflowsQuery') }, ...reader }, async (req) => {
    const page = pageOf(req.query);
    return read((snap) => listPage<Workflow, unknown>(snap, WORKFLOWS, page, (value, revision) => ({ ...publicWorkflow(value), revision })));
  });

  const cancelRoute = { schema: { params: def('api', 'WorkflowParams') }, schemaErrorFormatter: refusing({ params: ['DF_ERR_NOT_FOUND', 'no such workflow'] }), ...admin };
  app.post<{ Params: { id: string } }>('/api/v1/workflows/:id/cancel', cancelRoute, async (req) => {
    const exists = await deps.store.read((s) => s.get<Workflow>(workflowKey(req.params.id)));
    if (!exists) throw new DragonflyError('DF_ERR_NOT_FOUND', 'no such workflow');
    try {
      const wf = await finishWorkflow(deps.store, req.params.id, { state: 'failed', error: 'cancelled by an administrator' });
      return { ok: true, state: wf?.state };
    } catch (e) {
      if (e instanceof WorkflowStateError) throw new DragonflyError('DF_ERR_WORKFLOW_ENDED', e.message);
      throw e;
    }
  });

  // Server-sent events: every change to machines, workflows and the event log, with the store revision
  // that produced each value as the event id, so a client resumes with Last-Event-ID (or ?since=REV).
  const eventsRoute = { schema: { querystring: def('api', 'EventsQuery'), headers: def('api', 'EventsHeaders') }, ...reader };
  app.get<{ Querystring: { since?: string }; Headers: { 'last-event-id'?: string } }>('/api/v1/events', eventsRoute, async (req, reply) => {
    const last = req.headers['last-event-id'] ?? req.query.since;
    const since = last === undefined ? undefined : Number(last);
    const admission = hub.admit(req.ip, since);
    if (!admission.ok && admission.reason === 'compacted') {
      throw new DragonflyError('DF_ERR_STORE_COMPACTED', `revision ${since} is older than the events this server keeps (from ${admission.oldest} on): re-list, then follow from the list's revision`, { oldest: admission.oldest });
    }
    if (!admission.ok) {
      throw new DragonflyError('DF_ERR_TOO_MANY_STREAMS', admission.scope === 'total' ? 'the server holds its maximum of event streams' : 'this address holds its maximum of event streams');
    }
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive' });
    res.write('retry: 2000\n\n');
    hub.attach(res, req.ip, since ?? hub.revision);
  });
};
