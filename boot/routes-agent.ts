// The Mage agent API. Registration (discovery) is open but rate-limited per source; everything about a
// workflow needs that workflow's token.
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { DragonflyError } from '../schemas/errors.js';
import { normalizeMac } from '../schemas/mac.js';
import type { ActionReport, FinishReport, MachineRecord, RegisterRequest, RegisterResponse, Workflow } from '../schemas/types.js';
import { validateDefinition } from '../schemas/validate.js';
import { machineKey, workflowKey } from '../store/keys.js';
import { bootFateFor } from './fate.js';
import { finishWorkflow, recordHardware, reportAction, startWorkflow, WorkflowStateError } from './observe.js';
import type { BootServerDeps } from './server.js';
import { verifyWorkflowToken } from './tokens.js';
import { MachineWaiters } from './waiters.js';

const WORKFLOW_ID = /^wf-[a-z0-9-]{1,80}$/;
const POLL_SECONDS = 10;
/** A held registration looks at the record again this often, in case a wake-up was missed (see MachineWaiters). */
const RECHECK_MS = 5_000;

function bearer(req: FastifyRequest): string | undefined {
  const h = req.headers.authorization;
  return typeof h === 'string' && h.startsWith('Bearer ') ? h.slice(7).trim() : undefined;
}

function check<T>(def: string, body: unknown): T {
  const errors = validateDefinition('agent', def, body);
  if (errors.length > 0) {
    const e = errors[0]!;
    // Name the field, never echo the value.
    throw new DragonflyError('DF_ERR_BAD_REQUEST', `${e.instancePath || 'body'} ${e.message ?? 'is invalid'}`);
  }
  return body as T;
}

/** ${server.url} is the one variable left for the server to fill in (reconciler/variables.ts). */
function withServerUrl<T>(value: T, url: string): T {
  if (typeof value === 'string') return value.replaceAll('${server.url}', url) as T;
  if (Array.isArray(value)) return value.map((v) => withServerUrl(v, url)) as T;
  if (value && typeof value === 'object') return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, withServerUrl(v, url)])) as T;
  return value;
}

export const agentRoutes: FastifyPluginAsync<{ deps: BootServerDeps }> = async (app, { deps }) => {
  const authorize = (req: FastifyRequest<{ Params: { id: string } }>): string => {
    const id = req.params.id;
    if (!WORKFLOW_ID.test(id)) throw new DragonflyError('DF_ERR_NOT_FOUND', 'no such workflow');
    if (!verifyWorkflowToken(deps.secret, id, bearer(req))) throw new DragonflyError('DF_ERR_UNAUTHORIZED', 'this call needs the workflow token');
    return id;
  };
  const ended = (e: unknown): never => {
    if (e instanceof WorkflowStateError) throw new DragonflyError('DF_ERR_WORKFLOW_ENDED', e.message, { state: e.workflow.state });
    throw e;
  };

  // Held registrations answer at once when the server begins to close.
  const waiters = new MachineWaiters(deps.store);
  app.addHook('preClose', async () => waiters.close());

  app.post(
    '/api/v1/agent/register',
    { config: { rateLimit: { max: deps.registrationsPerMinute ?? 120, timeWindow: 60_000 } } },
    async (req, reply): Promise<RegisterResponse> => {
      const body = check<RegisterRequest>('RegisterRequest', req.body);
      const mac = normalizeMac(body.mac)!;
      let rec: MachineRecord = await recordHardware(deps.store, mac, body.hardware, req.ip);
      const answer = async (held: boolean): Promise<RegisterResponse> => {
        const wf = rec.workflow ? await deps.store.read((s) => s.get<Workflow>(workflowKey(rec.workflow!))?.value) : undefined;
        const fate = bootFateFor(rec, wf);
        // After a held wait Mage asks again at once; it sleeps pollSeconds only between short polls.
        const base = { mac, name: rec.name ?? rec.memorableName, memorableName: rec.memorableName, trusted: rec.phase !== 'Discovered', pollSeconds: held ? 0 : POLL_SECONDS };
        if (fate.kind === 'imaging') {
          // Mage booted for this very workflow carries its token; otherwise the machine must PXE boot again
          // to receive the imaging script (registration is open, so it never hands out tokens).
          const booted = body.workflow === fate.workflow && verifyWorkflowToken(deps.secret, fate.workflow, bearer(req));
          return booted ? { ...base, instruction: 'run', workflow: fate.workflow } : { ...base, instruction: 'reboot' };
        }
        if (fate.kind === 'localboot') return { ...base, instruction: 'localboot' };
        return { ...base, instruction: 'wait' };
      };
      const first = await answer(false);
      if (first.instruction !== 'wait' || !body.waitSeconds) return first;
      // Long poll: hold the answer until the machine's record changes (an apply, a retirement) or time runs out.
      const deadline = Date.now() + body.waitSeconds * 1000;
      // The response's 'close' before we answer: the agent hung up (a request's 'close' only means its body was read).
      let closed = false;
      reply.raw.once('close', () => (closed = true));
      for (;;) {
        const left = deadline - Date.now();
        await waiters.wait(mac, Math.min(left, RECHECK_MS));
        const now = await deps.store.read((s) => s.get<MachineRecord>(machineKey(mac))?.value);
        if (now) rec = now;
        const next = await answer(true);
        if (next.instruction !== 'wait' || closed || waiters.closed || Date.now() >= deadline) return next;
      }
    },
  );

  app.get<{ Params: { id: string } }>('/api/v1/agent/workflows/:id', async (req) => {
    const id = authorize(req);
    const wf = await startWorkflow(deps.store, id).catch(ended);
    if (!wf) throw new DragonflyError('DF_ERR_NOT_FOUND', 'no such workflow');
    return withServerUrl(wf, deps.serverUrl);
  });

  app.post<{ Params: { id: string; index: string } }>('/api/v1/agent/workflows/:id/actions/:index', async (req) => {
    const id = authorize(req);
    const index = Number(req.params.index);
    if (!Number.isInteger(index) || index < 0 || index > 1000) throw new DragonflyError('DF_ERR_NOT_FOUND', 'no such action');
    const report = check<ActionReport>('ActionReport', req.body);
    const wf = await reportAction(deps.store, id, index, report).catch(ended);
    if (!wf) throw new DragonflyError('DF_ERR_NOT_FOUND', 'no such workflow');
    return { ok: true, state: wf.state };
  });

  app.post<{ Params: { id: string } }>('/api/v1/agent/workflows/:id/finish', async (req) => {
    const id = authorize(req);
    const report = check<FinishReport>('FinishReport', req.body);
    const wf = await finishWorkflow(deps.store, id, report).catch(ended);
    if (!wf) throw new DragonflyError('DF_ERR_NOT_FOUND', 'no such workflow');
    return { ok: true, state: wf.state };
  });
};
