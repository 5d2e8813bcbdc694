// Read API (machines, workflows, an SSE stream of changes) and the admin calls, which need a bearer token.
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { DragonflyError } from '../schemas/errors.js';
import type { MachineRecord, Workflow } from '../schemas/types.js';
import { EVENTS, MACHINES, WORKFLOWS, workflowKey } from '../store/keys.js';
import type { Change } from '../store/store.js';
import { finishWorkflow, SEEN, WorkflowStateError, type SeenRecord } from './observe.js';
import type { BootServerDeps } from './server.js';
import { sameSecret } from './tokens.js';

const STREAMED = [MACHINES, WORKFLOWS, EVENTS];
const HEARTBEAT_MS = 15_000;

function kindOf(key: string): 'machine' | 'workflow' | 'event' {
  return key.startsWith(MACHINES) ? 'machine' : key.startsWith(WORKFLOWS) ? 'workflow' : 'event';
}

export const apiRoutes: FastifyPluginAsync<{ deps: BootServerDeps }> = async (app, { deps }) => {
  const admin = (req: FastifyRequest) => {
    const h = req.headers.authorization;
    const presented = typeof h === 'string' && h.startsWith('Bearer ') ? h.slice(7).trim() : '';
    // No configured token: admin calls are refused, never open.
    if (!deps.apiToken || !presented || !sameSecret(presented, deps.apiToken)) {
      throw new DragonflyError('DF_ERR_UNAUTHORIZED', 'admin calls need Authorization: Bearer $DRAGONFLY_API_TOKEN');
    }
  };

  app.get('/api/v1/machines', async () =>
    deps.store.read((snap) => {
      const seen = new Map(snap.list<SeenRecord>(SEEN).map((r) => [r.value.mac, r.value]));
      return snap.list<MachineRecord>(MACHINES).map((r) => ({ ...r.value, ...(seen.get(r.value.mac) ? { lastSeen: seen.get(r.value.mac)!.lastSeen, firstSeen: seen.get(r.value.mac)!.firstSeen } : {}), revision: r.modRevision }));
    }),
  );

  app.get('/api/v1/workflows', async () => deps.store.read((snap) => snap.list<Workflow>(WORKFLOWS).map((r) => ({ ...r.value, revision: r.modRevision }))));

  app.post<{ Params: { id: string } }>('/api/v1/workflows/:id/cancel', async (req) => {
    admin(req);
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
  // as the event id, so a client resumes with Last-Event-ID (or ?since=REV) without missing anything.
  app.get<{ Querystring: { since?: string } }>('/api/v1/events', async (req, reply) => {
    const last = req.headers['last-event-id'] ?? req.query.since;
    const since = last !== undefined && /^\d{1,15}$/.test(String(last)) ? Number(last) : await deps.store.read((s) => s.revision);
    reply.hijack();
    const res = reply.raw;
    res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive' });
    res.write('retry: 2000\n\n');
    let chain = Promise.resolve();
    const send = (changes: Change[]) => {
      chain = chain.then(async () => {
        const relevant = changes.filter((c) => STREAMED.some((p) => c.key.startsWith(p)));
        if (relevant.length === 0 || res.destroyed) return;
        const values = await deps.store.read((snap) => relevant.map((c) => ({ c, v: c.type === 'put' ? snap.get(c.key)?.value : undefined })));
        for (const { c, v } of values) {
          res.write(`id: ${c.revision}\nevent: ${kindOf(c.key)}\ndata: ${JSON.stringify({ key: c.key, type: c.type, revision: c.revision, value: v ?? null })}\n\n`);
        }
      });
    };
    const stop = deps.store.watch('', since, send);
    const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), HEARTBEAT_MS);
    req.raw.on('close', () => {
      stop();
      clearInterval(heartbeat);
    });
  });
};
