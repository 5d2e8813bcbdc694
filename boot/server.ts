// buildServer: the boot server's HTTP side as a fastify app. No listen() in here: `dragonfly serve`
// listens, tests use inject() or listen(0).
import fs from 'node:fs';
import path from 'node:path';
import { fastify, LogController, type FastifyInstance } from 'fastify';
import fastifyStatic from '@fastify/static';
import rateLimit from '@fastify/rate-limit';
import { DragonflyError, isDragonflyError } from '../schemas/errors.js';
import { createMetrics } from './metrics.js';
import { bootRoutes } from './routes-boot.js';
import { agentRoutes } from './routes-agent.js';
import { apiRoutes } from './routes-api.js';
import { webhookRoutes } from './routes-webhooks.js';
import { p2pRoutes } from './routes-p2p.js';
import { P2pHub } from './p2p-hub.js';
import { expireWorkflows } from './timeouts.js';
import { trimEvents } from './event-retention.js';
import { requireRole } from './auth.js';
import { isInside, resolveRootLinks, type RootLinks } from './tftp/root-links.js';
import { guardConnections } from './connection-guard.js';
import type { BootServerDeps } from './deps.js';
import { errorBody, REQUEST_HINT } from './http-errors.js';
import { compileRequestSchema, refuseRequest } from './route-schemas.js';
import { DiscoveryGate } from './discovery-gate.js';
import { EventHub } from './event-hub.js';


/** A full disk is logged at most this often: every request would otherwise log it. */
const STORE_FULL_LOG_MS = 60_000;

export function validateServerUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new DragonflyError('DF_ERR_SERVE_CONFIG', `--public-url ${JSON.stringify(url)} is not a URL`);
  }
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || u.search || u.hash || !/^[A-Za-z0-9._:/%-]+$/.test(url)) {
    throw new DragonflyError('DF_ERR_SERVE_CONFIG', `--public-url must be a plain http(s) URL such as http://10.0.0.1:8080, not ${JSON.stringify(url)}`);
  }
  return url.replace(/\/+$/, '');
}

/** Whether a request path under a static root resolves to a file that root may serve (see resolveRootLinks). */
function servedFromRoot(pinned: RootLinks | undefined, pathName: string): boolean {
  if (!pinned) return false;
  const rel = pathName.replace(/^\/+/, '');
  let real: string;
  try {
    real = fs.realpathSync(path.join(pinned.base, rel));
  } catch {
    return true; // does not exist: let the static handler answer 404
  }
  return isInside(pinned.base, real) || pinned.links.get(rel) === real;
}

export type { BootServerDeps } from './deps.js';
export { errorBody } from './http-errors.js';

export async function buildServer(deps: BootServerDeps): Promise<FastifyInstance> {
  const serverUrl = validateServerUrl(deps.serverUrl);
  const app = fastify({
    ...(typeof deps.logger === 'object' ? { loggerInstance: deps.logger } : { logger: deps.logger ?? false }),
    bodyLimit: 256 * 1024,
    // Hardware reports and progress are small; anything huge is hostile.
    routerOptions: { maxParamLength: 200 },
    return503OnClosing: true,
    // Two log lines per PXE request would drown what matters; routes log what happened instead.
    logController: new LogController({ disableRequestLogging: true }),
    // A malformed URL (bad percent-encoding…) is answered in our format and never echoed.
    frameworkErrors: (_err, _req, reply) => {
      void (reply as unknown as { code(n: number): { send(b: unknown): unknown } }).code(400).send(errorBody('DF_ERR_BAD_REQUEST', 'malformed URL', REQUEST_HINT));
    },
  });
  // Route schemas are our JSON Schemas, compiled by our Ajv; a request that fails one never reaches its handler.
  app.setValidatorCompiler(compileRequestSchema);
  app.setSchemaErrorFormatter(refuseRequest);
  // Before anything listens: half-open connections from the boot network must not exhaust descriptors.
  const guard = guardConnections(app.server, { ...deps.connections, log: app.log });
  let storeFullLogged = 0;
  let storeFullSince = 0;
  /** A store write failed: a full disk is rate-limited in the log and surfaces in /healthz; the rest is thrown on. */
  const storeErrors = (err: unknown) => {
    if (isDragonflyError(err) && err.code === 'DF_ERR_STORE_FULL') {
      const now = Date.now();
      storeFullSince++;
      if (now - storeFullLogged >= STORE_FULL_LOG_MS) {
        app.log.error({ code: err.code, refusedWrites: storeFullSince }, err.message);
        storeFullLogged = now;
        storeFullSince = 0;
      }
      return;
    }
    app.log.error({ err }, 'store write failed');
  };
  const metrics = createMetrics(deps.store, deps.tftpStats);

  // A callback hook, not an async one: it runs on every PXE request.
  app.addHook('onResponse', (req, reply, done) => {
    metrics.request(req.routeOptions.url ?? 'unmatched', reply.statusCode);
    done();
  });

  // Errors a client caused are 4xx with a code; anything else is ours: 500, logged, never echoed.
  // A request that fails its route schema arrives here as a DragonflyError (boot/route-schemas.ts).
  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, req, reply) => {
    if (isDragonflyError(err)) {
      if (err.code === 'DF_ERR_STORE_FULL') storeErrors(err);
      return reply.code(err.status).send({ error: err.toJSON() });
    }
    const status = err.statusCode ?? 500;
    if (status === 429) return reply.code(429).send(errorBody('DF_ERR_RATE_LIMITED', 'too many requests from this address'));
    if (status === 413) return reply.code(413).send(errorBody('DF_ERR_BAD_REQUEST', 'request body too large'));
    // A refused path (traversal, dotfiles) is just not found: nothing to learn about the tree.
    if (status === 403 || status === 404) return reply.code(404).send(errorBody('DF_ERR_NOT_FOUND', 'no such resource'));
    if (err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' || err.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || err.code === 'FST_ERR_CTP_INVALID_JSON_BODY') {
      return reply.code(status).send(errorBody('DF_ERR_BAD_REQUEST', 'malformed request body'));
    }
    if (status >= 400 && status < 500) return reply.code(status).send(errorBody('DF_ERR_BAD_REQUEST', 'malformed request', REQUEST_HINT));
    req.log.error({ err }, 'request failed');
    return reply.code(500).send({ error: { code: 'DF_ERR_INTERNAL', message: 'internal error' } });
  });
  app.setNotFoundHandler((_req, reply) => reply.code(404).send(errorBody('DF_ERR_NOT_FOUND', 'no such resource')));

  await app.register(rateLimit, { global: false });

  for (const [prefix, dir] of [
    ['/mage/', deps.mageDir],
    ['/ipxe/', deps.ipxeDir],
  ] as const) {
    if (!dir) continue;
    if (!fs.existsSync(dir)) throw new DragonflyError('DF_ERR_SERVE_CONFIG', `directory ${dir} (for ${prefix}) does not exist`);
    // @fastify/static serves Range requests and refuses paths outside root. Links are held to TFTP's rule
    // (boot/tftp/root-links.ts): those the root held at start are served, a link made later never is.
    const pinned = resolveRootLinks(dir);
    await app.register(fastifyStatic, {
      root: dir,
      prefix,
      decorateReply: false,
      index: false,
      list: false,
      dotfiles: 'deny',
      allowedPath: (pathName) => servedFromRoot(pinned, pathName),
    });
  }

  // Workflow timeouts, swept while the server runs.
  const sweepMs = deps.timeoutSweepMs ?? 5000;
  if (sweepMs > 0) {
    let sweeper: NodeJS.Timeout | undefined;
    app.addHook('onReady', async () => {
      sweeper = setInterval(() => {
        expireWorkflows(deps.store).then(
          (ids) => ids.length > 0 && app.log.warn({ workflows: ids }, 'workflows timed out'),
          (err: unknown) => app.log.error({ err }, 'timeout sweep failed'),
        );
      }, sweepMs);
      sweeper.unref();
    });
    app.addHook('onClose', async () => clearInterval(sweeper));
  }

  const gate = new DiscoveryGate(deps.store, { perMinute: deps.discoveryPerMinute ?? 60, maxDiscovered: deps.maxDiscovered ?? 10_000 });
  const hub = new EventHub(deps.store, deps.events ?? {});
  app.addHook('onReady', async () => {
    await gate.start();
    await hub.start();
  });
  app.addHook('preClose', async () => {
    gate.close();
    hub.close();
  });

  // The event log is trimmed at start and every minute: it must not grow without bound.
  let trimmer: NodeJS.Timeout | undefined;
  const trim = () =>
    trimEvents(deps.store, deps.maxEvents ?? 100_000).then(
      (n) => n > 0 && app.log.info({ deleted: n }, 'oldest events trimmed'),
      (err: unknown) => storeErrors(err),
    );
  app.addHook('onReady', async () => {
    void trim();
    trimmer = setInterval(() => void trim(), 60_000);
    trimmer.unref();
  });
  app.addHook('onClose', async () => clearInterval(trimmer));

  // Open: says only whether this server can do its job (a load balancer asks it), nothing about machines.
  app.get('/healthz', async (_req, reply) => {
    const store = deps.store.health();
    // Open to anyone: why, in general terms only (the path and figures go to the log).
    if (!store.writable) storeErrors(new DragonflyError('DF_ERR_STORE_FULL', store.reason ?? 'the state store cannot be written'));
    const body = { ok: store.writable, revision: await deps.store.read((s) => s.revision), store: store.writable ? 'writable' : 'not writable', ...(store.writable ? {} : { reason: 'disk full' }) };
    return reply.code(store.writable ? 200 : 503).send(body);
  });
  app.get('/metrics', async (req, reply) => {
    requireRole(req, deps, 'read');
    return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  metrics.gauge('dragonfly_http_connections', 'Open HTTP connections', () => guard.stats().open);
  metrics.gauge('dragonfly_http_connections_refused', 'HTTP connections refused over the total or per-address cap (counter since start)', () => guard.stats().refused);
  metrics.gauge('dragonfly_http_connections_timed_out', 'HTTP connections closed for sending no request in time (counter since start)', () => guard.stats().timedOut);
  metrics.gauge('dragonfly_event_streams', 'Open event streams (GET /api/v1/events)', () => hub.streams);
  metrics.gauge('dragonfly_event_streams_dropped', 'Event streams closed because the client did not read (counter since start)', () => hub.dropped);
  metrics.gauge('dragonfly_discovered_machines', 'Machines in phase Discovered (seen, not in git)', () => gate.discoveredCount);
  metrics.gauge('dragonfly_discovery_refused_macs', 'New MACs seen over the discovery budget, remembered in memory only', () => gate.strayCount);

  await app.register(bootRoutes, { deps: { ...deps, serverUrl }, metrics, gate, storeErrors });
  await app.register(agentRoutes, { deps: { ...deps, serverUrl }, gate });
  await app.register(apiRoutes, { deps, hub });
  await app.register(webhookRoutes, { deps });
  if (deps.p2pSeed) {
    const p2p = new P2pHub({ store: deps.store, seed: deps.p2pSeed, serverUrl });
    app.addHook('onReady', async () => p2p.start());
    app.addHook('preClose', async () => p2p.close());
    await app.register(p2pRoutes, { deps, hub: p2p });
  }
  return app;
}
