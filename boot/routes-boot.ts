// GET /boot.ipxe and GET /boot/:mac: the server decides each machine's fate from its MAC.
import type { FastifyPluginAsync } from 'fastify';
import { isUnicastMac, normalizeMac } from '../schemas/mac.js';
import type { MachineRecord, Workflow } from '../schemas/types.js';
import { machineKey, workflowKey } from '../store/keys.js';
import type { Snapshot } from '../store/store.js';
import { bootFateFor } from '../schemas/lifecycle.js';
import { bootScriptFor, entryScript } from './ipxe.js';
import type { DiscoveryGate } from './discovery-gate.js';
import type { BootMetrics } from './metrics.js';
import { recordSeen } from './observe.js';
import { SeenBatch } from './seen-batch.js';
import { BootAnswers, type BootEntry } from './boot-answers.js';
import type { BootServerDeps } from './deps.js';
import { errorBody } from './http-errors.js';
import { workflowToken } from './tokens.js';
import { def, refusing } from './route-schemas.js';

const ARCH = /^[a-z0-9_]{1,16}$/;
const PLATFORM = /^[a-z]{1,8}$/;
const UUID = /^[0-9a-fA-F-]{32,36}$/;

export const bootRoutes: FastifyPluginAsync<{ deps: BootServerDeps; metrics: BootMetrics; gate: DiscoveryGate; storeErrors: (err: unknown) => void }> = async (
  app,
  { deps, metrics, gate, storeErrors },
) => {
  const entry = entryScript(deps.serverUrl);
  const seen = new SeenBatch(deps.store, 1000, storeErrors);
  app.addHook('onClose', async () => seen.close());
  const answers = new BootAnswers(deps.store);
  app.addHook('onReady', async () => answers.start());
  app.addHook('preClose', async () => answers.close());

  const sendEntry = async (_req: unknown, reply: import('fastify').FastifyReply) => reply.type('text/plain; charset=utf-8').send(entry);
  app.get('/boot.ipxe', sendEntry);
  app.get('/autoexec.ipxe', sendEntry);

  // The MAC is checked by its schema (compiled once); the query is read leniently below, never refused.
  const bootMac = { schema: { params: def('api', 'MacParams') }, schemaErrorFormatter: refusing({ params: ['DF_ERR_BAD_MAC', 'not a MAC address'] }) };
  app.get<{ Params: { mac: string }; Querystring: Record<string, string | undefined> }>('/boot/:mac', bootMac, async (req, reply) => {
    // Any case, ':' or '-' (iPXE's ${mac:hexhyp}); anything else is refused and never echoed.
    const mac = normalizeMac(req.params.mac);
    if (!mac) return reply.code(400).send(errorBody('DF_ERR_BAD_MAC', 'not a MAC address'));
    if (!isUnicastMac(mac)) return reply.code(400).send(errorBody('DF_ERR_BAD_MAC', 'not the address of a NIC (all zeros, broadcast or multicast)'));
    const q = req.query ?? {};
    const platform = q.platform && PLATFORM.test(q.platform) ? q.platform : undefined;

    // A known machine's records come from memory while the store has not changed them (boot-answers.ts).
    let held: BootEntry | undefined = answers.get(mac);
    let rec = held?.rec;
    let wf = held?.wf;
    if (!held) {
      const lookup = (snap: Snapshot) => {
        const r = snap.get<MachineRecord>(machineKey(mac))?.value;
        return { r, w: r?.workflow ? snap.get<Workflow>(workflowKey(r.workflow))?.value : undefined };
      };
      // Only what was read synchronously is remembered: an await could let a change slip in before it is.
      if (deps.store.readSync) {
        const { r, w } = deps.store.readSync(lookup);
        if (r) held = answers.set(mac, r, w);
        rec = r;
        wf = w;
      } else {
        ({ r: rec, w: wf } = await deps.store.read(lookup));
      }
    }

    // Record the sighting. An unknown MAC becomes Discovered at once (within a per-source budget);
    // a known one's seen-time joins the next batch, at most every 30 s per machine.
    if (!rec || seen.wants(mac)) {
      const info = {
        source: 'pxe' as const,
        ip: req.ip,
        ...(q.arch && ARCH.test(q.arch) ? { arch: q.arch } : {}),
        ...(platform ? { platform } : {}),
        ...(q.uuid && UUID.test(q.uuid) ? { uuid: q.uuid.toLowerCase() } : {}),
      };
      if (!rec) {
        // Over the budget: remembered in memory, not committed; the machine still gets its discovery script.
        const verdict = gate.admit(req.ip);
        if (verdict !== 'ok') gate.stray(mac, req.ip);
        else {
          // A store that cannot be written (disk full) must not keep a machine from booting Mage.
          const created = await recordSeen(deps.store, mac, info).catch((err: unknown) => (storeErrors(err), undefined));
          if (created?.created) req.log.info({ mac, name: created.record?.memorableName, ip: req.ip }, 'machine discovered');
        }
      } else {
        seen.add({ mac, lastSeen: new Date().toISOString(), ...info });
      }
    }

    const fate = bootFateFor(rec, wf);
    metrics.bootScript(fate.kind);
    const render = () =>
      bootScriptFor(fate, {
        serverUrl: deps.serverUrl,
        mac,
        ...(rec ? { name: rec.name ?? rec.memorableName } : {}),
        ...(platform ? { platform } : {}),
        // The token opens a workflow only until a Mage claims it; after the claim the script carries none, so
        // naming the MAC gets an attacker nothing (docs/security.md).
        ...(fate.kind === 'imaging' && wf?.state === 'pending' && !wf.claim ? { token: workflowToken(deps.secret, fate.workflow) } : {}),
        ...(deps.kernelArgs ? { kernelArgs: deps.kernelArgs } : {}),
      });
    const script = held ? answers.script(held, platform ?? '', render) : render();
    return reply.type('text/plain; charset=utf-8').header('cache-control', 'no-store').send(script);
  });
};
