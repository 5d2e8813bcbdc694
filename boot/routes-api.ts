// The read API (machines, workflows, an SSE stream of changes; a read or admin token) and the admin calls
// (the admin token). Nothing here is open: hardware inventories and MACs are not public.
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

/** A page of the read API: at most this many items (default 500). */
const MAX_LIMIT = 5000;
const DEFAULT_LIMIT = 500;
const WORKFLOW_ID = /^wf-[a-z0-9-]{1,80}$/;

interface PageQuery {
  limit?: string;
  after?: string;
}

function pageOf(q: PageQuery): { limit: number; after: string | undefined } {
  const limit = q.limit === undefined ? DEFAULT_LIMIT : /^\d{1,5}$/.test(q.limit) ? Number(q.limit) : NaN;
  if (!(limit >= 1 && limit <= MAX_LIMIT)) throw new DragonflyError('DF_ERR_BAD_REQUEST', `limit must be an integer from 1 to ${MAX_LIMIT}`);
  return { limit, after: q.after };
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
  const reader = (req: FastifyRequest) => requireRole(req, deps, 'read');
  const admin = (req: FastifyRequest) => requireRole(req, deps, 'admin');
  const read = <T>(fn: (snap: Snapshot) => T) => (deps.store.readSync ? deps.store.readSync(fn) : deps.store.read(fn));

  app.get<{ Querystring: PageQuery }>('/api/v1/machines', async (req) => {
    reader(req);
    const page = pageOf(req.query);
    if (page.after !== undefined && !normalizeMac(page.after)) throw new DragonflyError('DF_ERR_BAD_REQUEST', 'after must be a MAC (the next of the previous page)');
    return read((snap) =>
      listPage<MachineRecord, unknown>(snap, MACHINES, { ...page, ...(page.after ? { after: normalizeMac(page.after)! } : {}) }, (value, revision) => {
        const seen = snap.get<SeenRecord>(seenKey(value.mac))?.value;
        return { ...value, ...(seen ? { lastSeen: seen.lastSeen, firstSeen: seen.firstSeen } : {}), revision };
      }),
    );
  });

  app.get<{ Querystring: PageQuery }>('/api/v1/workflows', async (req) => {
    reader(req);
    const page = pageOf(req.query);
    if (page.after !== undefined && !WORKFLOW_ID.test(page.after)) throw new DragonflyError('DF_ERR_BAD_REQUEST', 'after must be a workflow id (the next of the previous page)');
    return read((snap) => listPage<Workflow, unknown>(snap, WORKFLOWS, page, (value, revision) => ({ ...publicWorkflow(value), revision })));
  });

  app.post<{ Params: { id: string } }>('/api/v1/workflows/:id/cancel', async (req) => {
    admin(req);
    if (!WORKFLOW_ID.test(req.params.id)) throw new DragonflyError('DF_ERR_NOT_FOUND', 'no such workflow');
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
  app.get<{ Querystring: { since?: string } }>('/api/v1/events', async (req, reply) => {
    reader(req);
    const last = req.headers['last-event-id'] ?? req.query.since;
    if (last !== undefined && !/^\d{1,15}$/.test(String(last))) throw new DragonflyError('DF_ERR_BAD_REQUEST', 'Last-Event-ID and since take a store revision (a number)');
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
