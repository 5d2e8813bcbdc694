// The Mage agent API. Registration (discovery) is open but rate-limited per source. A workflow is claimed
// once, with the token from its boot script; from then on every call about it needs the claiming Mage's own
// secret, from the address it claimed from (docs/security.md). Paths and bodies are checked against their
// schemas (boot/route-schemas.ts) before any credential: a malformed request never reads the store.
import type { FastifyPluginAsync, FastifyRequest } from 'fastify';
import { DragonflyError } from '../schemas/errors.js';
import { isUnicastMac, normalizeMac } from '../schemas/mac.js';
import type { DiscoveryGate } from './discovery-gate.js';
import type { ActionReport, ClaimRequest, FinishReport, MachineRecord, RegisterRequest, RegisterResponse, Workflow, WorkflowP2P } from '../schemas/types.js';
import { machineKey, workflowKey } from '../store/keys.js';
import { bootFateFor } from '../schemas/lifecycle.js';
import { publicWorkflow } from './public.js';
import { recordHardware } from './observe.js';
import { claimWorkflow, finishWorkflow, reportAction, WorkflowClaimedError, WorkflowStateError } from './workflow-progress.js';
import type { BootServerDeps } from './deps.js';
import { bearerToken as bearer } from './auth.js';
import { claimSecretMatches, p2pToken, secretSha256, verifyWorkflowToken } from './tokens.js';
import { MachineWaiters } from './waiters.js';
import { def, refusing, type Refusal } from './route-schemas.js';
import { withServerUrl } from './server-url.js';

const POLL_SECONDS = 10;
/** A held registration looks at the record again this often, in case a wake-up was missed (see MachineWaiters). */
const RECHECK_MS = 5_000;

/** The workflow's token opens it only while nobody has claimed it. */
function claimable(wf: Workflow | undefined): boolean {
  return wf !== undefined && wf.state === 'pending' && !wf.claim;
}

/** The caller is the Mage that claimed `wf`: its secret, from its address. */
function isClaimant(wf: Workflow | undefined, req: FastifyRequest): boolean {
  return wf?.claim !== undefined && wf.claim.ip === req.ip && claimSecretMatches(wf.claim.secretSha256, bearer(req));
}

/** An id that is not a workflow id names no workflow; an index out of range, no action. */
const NO_WORKFLOW: Refusal = ['DF_ERR_NOT_FOUND', 'no such workflow'];
const ABOUT_A_WORKFLOW = { schemaErrorFormatter: refusing({ params: NO_WORKFLOW }) };

interface WorkflowParams {
  id: string;
}

export const agentRoutes: FastifyPluginAsync<{ deps: BootServerDeps; gate: DiscoveryGate }> = async (app, { deps, gate }) => {
  const readWorkflow = (id: string) => deps.store.read((s) => s.get<Workflow>(workflowKey(id))?.value);
  /** Calls about a claimed workflow: only its claimant. The token alone is refused, whoever sends it. */
  const authorize = async (req: FastifyRequest<{ Params: WorkflowParams }>): Promise<string> => {
    const id = req.params.id;
    const wf = await readWorkflow(id);
    if (isClaimant(wf, req)) return id;
    if (wf?.claim && verifyWorkflowToken(deps.secret, id, bearer(req))) {
      throw new DragonflyError('DF_ERR_WORKFLOW_CLAIMED', `workflow ${id} was claimed by another Mage; its token alone is refused`);
    }
    throw new DragonflyError('DF_ERR_UNAUTHORIZED', 'this call needs the secret of the Mage that claimed the workflow, from its address');
  };
  /**
   * The workflow as its claimant gets it: ${server.url} filled in, and, when this server distributes images
   * peer to peer, the image's P2P token (only a claimant holds one: a MAC named on the boot network does not).
   */
  const forClaimant = (wf: Workflow): Workflow & { p2p?: WorkflowP2P } => {
    const out = withServerUrl(publicWorkflow(wf), deps.serverUrl);
    return deps.p2pSeed && wf.image ? { ...out, p2p: { token: p2pToken(deps.secret, wf.image.sha256) } } : out;
  };
  const ended = (e: unknown): never => {
    if (e instanceof WorkflowClaimedError) throw new DragonflyError('DF_ERR_WORKFLOW_CLAIMED', e.message);
    if (e instanceof WorkflowStateError) throw new DragonflyError('DF_ERR_WORKFLOW_ENDED', e.message, { state: e.workflow.state });
    throw e;
  };

  // Held registrations answer at once when the server begins to close.
  const waiters = new MachineWaiters(deps.store);
  app.addHook('preClose', async () => waiters.close());

  app.post<{ Body: RegisterRequest }>(
    '/api/v1/agent/register',
    { schema: { body: def('agent', 'RegisterRequest') }, config: { rateLimit: { max: deps.registrationsPerMinute ?? 120, timeWindow: 60_000 } } },
    async (req, reply): Promise<RegisterResponse> => {
      const body = req.body;
      const mac = normalizeMac(body.mac)!;
      if (!isUnicastMac(mac)) throw new DragonflyError('DF_ERR_BAD_MAC', 'not the address of a NIC (all zeros, broadcast or multicast)');
      const known = await deps.store.read((s) => s.get<MachineRecord>(machineKey(mac))?.value);
      if (!known) {
        // A new MAC through the agent API takes from the same discovery budget as one through PXE.
        const verdict = gate.admit(req.ip);
        if (verdict !== 'ok') {
          gate.stray(mac, req.ip);
          if (verdict === 'full') throw new DragonflyError('DF_ERR_DISCOVERY_FULL', 'the store holds its maximum of Discovered machines; this MAC is not recorded');
          throw new DragonflyError('DF_ERR_RATE_LIMITED', 'too many new MACs from this address; this one is not recorded');
        }
      }
      // Never the machine's verified hardware: that comes only with the finish of a claimed workflow.
      let rec: MachineRecord = await recordHardware(deps.store, mac, body.hardware, req.ip);
      const answer = async (held: boolean): Promise<RegisterResponse> => {
        const wf = rec.workflow ? await readWorkflow(rec.workflow) : undefined;
        const fate = bootFateFor(rec, wf);
        // After a held wait Mage asks again at once; it sleeps pollSeconds only between short polls.
        const base = { mac, name: rec.name ?? rec.memorableName, memorableName: rec.memorableName, trusted: rec.phase !== 'Discovered', pollSeconds: held ? 0 : POLL_SECONDS };
        if (fate.kind === 'imaging') {
          // Mage booted for this very workflow carries its token (unclaimed) or is its claimant; otherwise an
          // unclaimed workflow needs a PXE boot for the imaging script (registration never hands out tokens),
          // and a workflow another Mage claimed leaves this one waiting until it ends.
          const booted = body.workflow === fate.workflow && ((claimable(wf) && verifyWorkflowToken(deps.secret, fate.workflow, bearer(req))) || isClaimant(wf, req));
          if (booted) return { ...base, instruction: 'run', workflow: fate.workflow };
          return claimable(wf) ? { ...base, instruction: 'reboot' } : { ...base, instruction: 'wait' };
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

  // The claim: the token from the boot script, once, while the workflow is pending; the body carries the
  // Mage's own secret, which every later call presents instead.
  app.post<{ Params: WorkflowParams; Body: ClaimRequest }>(
    '/api/v1/agent/workflows/:id/claim',
    { schema: { params: def('api', 'WorkflowParams'), body: def('agent', 'ClaimRequest') }, ...ABOUT_A_WORKFLOW },
    async (req) => {
      const id = req.params.id;
      if (!verifyWorkflowToken(deps.secret, id, bearer(req))) throw new DragonflyError('DF_ERR_UNAUTHORIZED', 'a claim needs the workflow token from the boot script');
      const wf = await claimWorkflow(deps.store, id, { secretSha256: secretSha256(req.body.secret), ip: req.ip }).catch(ended);
      if (!wf) throw new DragonflyError('DF_ERR_NOT_FOUND', 'no such workflow');
      req.log.info({ workflow: id, mac: wf.mac, ip: req.ip }, 'workflow claimed');
      return forClaimant(wf);
    },
  );

  app.get<{ Params: WorkflowParams }>('/api/v1/agent/workflows/:id', { schema: { params: def('api', 'WorkflowParams') }, ...ABOUT_A_WORKFLOW }, async (req) => {
    const id = await authorize(req);
    const wf = await readWorkflow(id);
    if (!wf) throw new DragonflyError('DF_ERR_NOT_FOUND', 'no such workflow');
    return forClaimant(wf);
  });

  app.post<{ Params: WorkflowParams & { index: number }; Body: ActionReport }>(
    '/api/v1/agent/workflows/:id/actions/:index',
    {
      schema: { params: def('api', 'ActionParams'), body: def('agent', 'ActionReport') },
      schemaErrorFormatter: refusing({ 'params/id': NO_WORKFLOW, 'params/index': ['DF_ERR_NOT_FOUND', 'no such action'] }),
    },
    async (req) => {
      const id = await authorize(req);
      const wf = await reportAction(deps.store, id, req.params.index, req.body).catch(ended);
      if (!wf) throw new DragonflyError('DF_ERR_NOT_FOUND', 'no such workflow');
      return { ok: true, state: wf.state };
    },
  );

  app.post<{ Params: WorkflowParams; Body: FinishReport }>(
    '/api/v1/agent/workflows/:id/finish',
    { schema: { params: def('api', 'WorkflowParams'), body: def('agent', 'FinishReport') }, ...ABOUT_A_WORKFLOW },
    async (req) => {
      const id = await authorize(req);
      const wf = await finishWorkflow(deps.store, id, req.body).catch(ended);
      if (!wf) throw new DragonflyError('DF_ERR_NOT_FOUND', 'no such workflow');
      return { ok: true, state: wf.state };
    },
  );
};
