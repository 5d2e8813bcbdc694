// Verifying forge webhooks (GitHub, GitLab, Gitea/Forgejo). Pure: no fastify, no I/O. The HTTP side is
// boot/routes-webhooks.ts.
//
// - GitHub: `X-Hub-Signature-256: sha256=HEX`, HMAC-SHA256(secret, raw body); event in `X-GitHub-Event`.
// - GitLab: `X-Gitlab-Token: SECRET`, the secret itself (no signature over the body); event in
//   `X-Gitlab-Event` (`Push Hook`).
// - Gitea (and Forgejo, which sends the same header): `X-Gitea-Signature: HEX`, HMAC-SHA256(secret,
//   raw body), no prefix; event in `X-Gitea-Event` (`push`).
//
// Every comparison is constant-time. A refusal's reason is a fixed phrase: it never carries a header
// value, the secret or any part of the body, so it can be logged and sent back as is.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';

export type WebhookProvider = 'github' | 'gitlab' | 'gitea';
export const WEBHOOK_PROVIDERS: readonly WebhookProvider[] = ['github', 'gitlab', 'gitea'];

/** Bodies above this are refused (413). A push payload carries at most 20 commits; 1 MiB is ample. */
export const MAX_WEBHOOK_BODY = 1024 * 1024;

export interface WebhookEvent {
  provider: WebhookProvider;
  kind: 'push' | 'ping' | 'other';
  /** For a push: the ref pushed, e.g. refs/heads/main. */
  ref?: string;
  /** For a push: the commit the ref points at now (40 or 64 hex digits; all zeros when the ref was deleted). */
  after?: string;
  /** owner/name (GitHub, Gitea) or group/project (GitLab), when the payload names it. */
  repository?: string;
}

export type WebhookResult =
  | { ok: true; event: WebhookEvent }
  | {
      ok: false;
      reason: string;
      /** The HTTP status to answer with: 401 wrong or missing signature/token, 400 malformed after a good
       * signature, 403 no secret configured, 413 body too large, 415 not JSON (or GitHub's form encoding). */
      status: 400 | 401 | 403 | 413 | 415;
    };

export type WebhookHeaders = Record<string, string | string[] | undefined>;

const fail = (status: 400 | 401 | 403 | 413 | 415, reason: string): WebhookResult => ({ ok: false, reason, status });

/** A header by name, any case; undefined when absent or repeated (a repeated header is ambiguous). */
function header(headers: WebhookHeaders, name: string): string | undefined {
  const want = name.toLowerCase();
  let found: string | undefined;
  let count = 0;
  for (const [k, v] of Object.entries(headers)) {
    if (k.toLowerCase() !== want || v === undefined) continue;
    if (Array.isArray(v)) return undefined;
    found = v;
    count++;
  }
  return count === 1 ? found : undefined;
}

function hmacHex(secret: string, body: Buffer): Buffer {
  return createHmac('sha256', secret).update(body).digest();
}

/** Constant-time check of a hex HMAC-SHA256 against the body. `hex` must already be 64 hex digits. */
function signatureMatches(hex: string, secret: string, body: Buffer): boolean {
  const presented = Buffer.from(hex, 'hex');
  const expected = hmacHex(secret, body);
  return presented.length === expected.length && timingSafeEqual(presented, expected);
}

/** Constant-time equality of two strings of any length: both are hashed first, so timingSafeEqual
 * always sees equal lengths and the time taken says nothing about the secret's length or content. */
function sameString(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a, 'utf8').digest();
  const hb = createHash('sha256').update(b, 'utf8').digest();
  return timingSafeEqual(ha, hb) && Buffer.byteLength(a) === Buffer.byteLength(b);
}

const HEX64 = /^[0-9a-fA-F]{64}$/;
const SHA = /^(?:[0-9a-f]{40}|[0-9a-f]{64})$/;
// Git ref names: printable ASCII without space or the characters git forbids; short enough to log.
const REF = /^refs\/[A-Za-z0-9._\/+@=,-]{1,250}$/;
const REPO = /^[A-Za-z0-9._\/-]{1,255}$/;

function checkSignature(provider: WebhookProvider, headers: WebhookHeaders, body: Buffer, secret: string): string | undefined {
  if (provider === 'github') {
    const sig = header(headers, 'x-hub-signature-256');
    if (sig === undefined) return 'missing X-Hub-Signature-256 header (set a secret in the webhook settings)';
    if (!sig.startsWith('sha256=') || !HEX64.test(sig.slice(7))) return 'malformed X-Hub-Signature-256 header (want sha256= and 64 hex digits)';
    return signatureMatches(sig.slice(7), secret, body) ? undefined : 'signature does not match the body and the configured secret';
  }
  if (provider === 'gitea') {
    const sig = header(headers, 'x-gitea-signature') ?? header(headers, 'x-forgejo-signature');
    if (sig === undefined) return 'missing X-Gitea-Signature header (set a secret in the webhook settings)';
    if (!HEX64.test(sig)) return 'malformed X-Gitea-Signature header (want 64 hex digits)';
    return signatureMatches(sig, secret, body) ? undefined : 'signature does not match the body and the configured secret';
  }
  const token = header(headers, 'x-gitlab-token');
  if (token === undefined || token === '') return 'missing X-Gitlab-Token header (set a secret token in the webhook settings)';
  if (token.length > 1024) return 'malformed X-Gitlab-Token header (too long)';
  return sameString(token, secret) ? undefined : 'X-Gitlab-Token does not match the configured secret';
}

function eventKind(provider: WebhookProvider, type: string): WebhookEvent['kind'] {
  if (provider === 'gitlab') return type === 'Push Hook' ? 'push' : 'other';
  if (type === 'push') return 'push';
  return type === 'ping' ? 'ping' : 'other';
}

const EVENT_HEADER: Record<WebhookProvider, string> = { github: 'x-github-event', gitlab: 'x-gitlab-event', gitea: 'x-gitea-event' };

/** The JSON document the forge sent: the body itself, or the `payload` field of a form-encoded body
 * (GitHub's and Gitea's "application/x-www-form-urlencoded" option). */
function payloadOf(body: Buffer, form: boolean): Record<string, unknown> | undefined {
  let text = body.toString('utf8');
  if (form) {
    const p = new URLSearchParams(text).get('payload');
    if (p === null) return undefined;
    text = p;
  }
  try {
    const v: unknown = JSON.parse(text);
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

function str(v: unknown, re: RegExp): string | undefined {
  return typeof v === 'string' && re.test(v) ? v : undefined;
}

function field(o: unknown, key: string): unknown {
  return o !== null && typeof o === 'object' && !Array.isArray(o) ? (o as Record<string, unknown>)[key] : undefined;
}

/**
 * Checks that a webhook request comes from the forge that knows `secret`, and reads what it says.
 * The order matters: size, content type, then the signature over the raw bytes, and only then is the
 * body parsed; nothing unauthenticated is ever parsed as JSON.
 */
export function verifyWebhook(provider: WebhookProvider, headers: WebhookHeaders, rawBody: Buffer, secret: string): WebhookResult {
  if (!WEBHOOK_PROVIDERS.includes(provider)) return fail(400, 'unknown webhook provider');
  if (!secret) return fail(403, 'no webhook secret configured');
  if (rawBody.length > MAX_WEBHOOK_BODY) return fail(413, `body larger than ${MAX_WEBHOOK_BODY} bytes`);

  const type = (header(headers, 'content-type') ?? '').split(';')[0]!.trim().toLowerCase();
  const form = type === 'application/x-www-form-urlencoded' && provider !== 'gitlab';
  if (type !== 'application/json' && !form) return fail(415, 'content type must be application/json (set it in the webhook settings)');

  const bad = checkSignature(provider, headers, rawBody, secret);
  if (bad) return fail(401, bad);

  const eventType = header(headers, EVENT_HEADER[provider]);
  if (!eventType) return fail(400, `missing ${EVENT_HEADER[provider]} header`);
  const payload = payloadOf(rawBody, form);
  if (!payload) return fail(400, form ? 'form body without a JSON object in payload=' : 'body is not a JSON object');

  const kind = eventKind(provider, eventType);
  const repository = str(provider === 'gitlab' ? field(payload.project, 'path_with_namespace') : field(payload.repository, 'full_name'), REPO);
  const event: WebhookEvent = { provider, kind, ...(repository ? { repository } : {}) };
  if (kind !== 'push') return { ok: true, event };

  const ref = str(payload.ref, REF);
  if (!ref) return fail(400, 'push payload without a valid ref');
  const after = str(payload.after, SHA);
  return { ok: true, event: { ...event, ref, ...(after ? { after } : {}) } };
}
