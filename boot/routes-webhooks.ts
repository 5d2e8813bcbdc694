// POST /api/v1/webhooks/{github,gitlab,gitea}: a forge tells `dragonfly serve --repo URL` that a push
// happened, so the controller fetches at once instead of at its next poll. Verification is in
// boot/webhooks.ts (pure); this plugin feeds it the raw body and turns its answer into HTTP.
//
// The HMAC covers the raw bytes, so this plugin replaces the body parsers with one that keeps the Buffer.
// Registered without fastify-plugin, the replacement is encapsulated: every other route keeps fastify's
// JSON parsing.
import type { FastifyPluginAsync } from 'fastify';
import type { BootServerDeps } from './deps.js';
import { errorBody } from './http-errors.js';
import { MAX_WEBHOOK_BODY, verifyWebhook, WEBHOOK_PROVIDERS, type WebhookEvent } from './webhooks.js';

const NO_SECRET = 'no webhook secret configured: set DRAGONFLY_WEBHOOK_SECRET';

/** The ref a push must update to make the server fetch: `main` → refs/heads/main; undefined: any branch. */
export function followedRef(branch: string | undefined): string | undefined {
  if (!branch) return undefined;
  return branch.startsWith('refs/') ? branch : `refs/heads/${branch}`;
}

export const webhookRoutes: FastifyPluginAsync<{ deps: BootServerDeps }> = async (app, { deps }) => {
  app.removeAllContentTypeParsers();
  // Every content type arrives as raw bytes; verifyWebhook refuses what is neither JSON nor a form.
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));

  const ref = followedRef(deps.webhookBranch);

  for (const provider of WEBHOOK_PROVIDERS) {
    app.post(
      `/api/v1/webhooks/${provider}`,
      {
        bodyLimit: MAX_WEBHOOK_BODY,
        // Counts every call, signed or not, per source address. A valid push only *asks* for a fetch;
        // coalescing a burst of them into one fetch is onWebhookPush's job (see BootServerDeps).
        config: { rateLimit: { max: deps.webhooksPerMinute ?? 60, timeWindow: 60_000 } },
      },
      async (req, reply) => {
        const log = { provider, remoteAddress: req.ip };
        if (!deps.webhookSecret) {
          req.log.warn({ ...log, reason: 'no webhook secret configured' }, 'webhook refused');
          return reply.code(403).send(errorBody('DF_ERR_WEBHOOK_DISABLED', NO_SECRET));
        }
        const body = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
        const result = verifyWebhook(provider, req.headers, body, deps.webhookSecret);
        if (!result.ok) {
          // Only fixed phrases: never the body, the signature or the token.
          req.log.warn({ ...log, status: result.status, reason: result.reason }, 'webhook refused');
          const code = result.status === 401 ? 'DF_ERR_WEBHOOK_SIGNATURE' : result.status === 403 ? 'DF_ERR_WEBHOOK_DISABLED' : 'DF_ERR_WEBHOOK_PAYLOAD';
          return reply.code(result.status).send(errorBody(code, result.reason));
        }

        const { event } = result;
        if (event.kind === 'ping') {
          req.log.info({ ...log, repository: event.repository }, 'webhook ping');
          return reply.code(200).send({ ok: true, event: 'ping' });
        }
        if (event.kind !== 'push') return reply.code(202).send({ ok: true, ignored: 'not a push event' });
        if (ref ? event.ref !== ref : !event.ref?.startsWith('refs/heads/')) {
          return reply.code(202).send({ ok: true, ignored: `push to ${event.ref}; this server follows ${ref ?? 'branches only'}` });
        }
        if (!deps.onWebhookPush) return reply.code(202).send({ ok: true, ignored: 'this server does not follow a git repository' });

        req.log.info({ ...log, repository: event.repository, ref: event.ref, after: event.after }, 'webhook push: fetching');
        notify(deps.onWebhookPush, event, (err) => req.log.error({ err, provider }, 'webhook push handler failed'));
        return reply.code(202).send({ ok: true, fetch: true, ref: event.ref, ...(event.after ? { after: event.after } : {}) });
      },
    );
  }
};

/** Calls the callback without waiting for it: the forge gets its answer at once (GitHub gives up after 10 s). */
function notify(cb: (event: WebhookEvent) => void | Promise<unknown>, event: WebhookEvent, onError: (err: unknown) => void): void {
  try {
    Promise.resolve(cb(event)).catch(onError);
  } catch (err) {
    onError(err);
  }
}
