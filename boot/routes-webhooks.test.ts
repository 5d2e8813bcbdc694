// The webhook endpoints through buildServer, against a real (temp) LMDB store, with the server's log
// captured so we can check what a refused webhook leaves in it.
import { createHmac } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LmdbStore } from '../store/lmdb.js';
import { buildServer, type BootServerDeps } from './server.js';
import type { WebhookEvent } from './webhooks.js';

const SECRET = 'whsec-3c1f9b0e2d7a4f6c8e5b1a9d0c7f2e4b';
const MARKER = 'MARKER-do-not-log-4b7e';
const SHA = 'a3f4c2d1e0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5';
const hmac = (body: Buffer | string, secret = SECRET) => createHmac('sha256', secret).update(body).digest('hex');

/** A push as GitHub sends it (abridged to the fields that matter, with the usual shape). */
const githubPush = (ref = 'refs/heads/main') => ({
  ref,
  before: '9049f1265b7d61be4a8904a9a27120d2064dab3b',
  after: SHA,
  base_ref: null,
  created: false,
  deleted: false,
  forced: false,
  compare: 'https://github.com/acme/fleet/compare/9049f1265b7d...a3f4c2d1e0b9',
  repository: {
    id: 186853002,
    node_id: 'MDEwOlJlcG9zaXRvcnkxODY4NTMwMDI=',
    name: 'fleet',
    full_name: 'acme/fleet',
    private: true,
    owner: { name: 'acme', login: 'acme', id: 21031067, type: 'Organization' },
    html_url: 'https://github.com/acme/fleet',
    clone_url: 'https://github.com/acme/fleet.git',
    default_branch: 'main',
    master_branch: 'main',
  },
  pusher: { name: 'octocat', email: 'octocat@example.com' },
  sender: { login: 'octocat', id: 583231, type: 'User' },
  commits: [
    {
      id: SHA,
      tree_id: 'f9d2a07e9488b91af2641b26b9407fe22a451433',
      distinct: true,
      message: `assignments/web: bump generation (${MARKER})`,
      timestamp: '2026-01-07T10:00:00+01:00',
      url: `https://github.com/acme/fleet/commit/${SHA}`,
      author: { name: 'Octo Cat', email: 'octocat@example.com', username: 'octocat' },
      committer: { name: 'GitHub', email: 'noreply@github.com', username: 'web-flow' },
      added: [],
      removed: [],
      modified: ['assignments/web.yaml'],
    },
  ],
  head_commit: { id: SHA, message: `assignments/web: bump generation (${MARKER})` },
});

let dir: string;
let store: LmdbStore;
let app: FastifyInstance;
let logged: string;
let pushes: WebhookEvent[];

let running: FastifyInstance | undefined;

/** (Re)builds the server with these deps on top of the defaults. */
async function start(over: Partial<BootServerDeps> = {}) {
  await running?.close();
  logged = '';
  const logger = pino({ level: 'info' }, { write: (line: string) => void (logged += line) });
  app = await buildServer({
    store,
    secret: Buffer.alloc(32, 7),
    serverUrl: 'http://10.0.0.1:8080',
    timeoutSweepMs: 0,
    logger,
    webhookSecret: SECRET,
    webhookBranch: 'main',
    onWebhookPush: (e) => void pushes.push(e),
    ...over,
  });
  running = app;
}

beforeEach(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-webhooks-'));
  store = LmdbStore.open(path.join(dir, 'state'));
  pushes = [];
  await start();
});
afterEach(async () => {
  await running?.close();
  running = undefined;
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

function github(payload: unknown, headers: Record<string, string> = {}, event = 'push') {
  const body = typeof payload === 'string' ? payload : JSON.stringify(payload);
  return app.inject({
    method: 'POST',
    url: '/api/v1/webhooks/github',
    headers: {
      'content-type': 'application/json',
      'x-github-event': event,
      'x-github-delivery': '72d3162e-cc78-11e3-81ab-4c9367dc0958',
      'x-hub-signature-256': `sha256=${hmac(body)}`,
      'user-agent': 'GitHub-Hookshot/044aadd',
      ...headers,
    },
    payload: body,
  });
}

const logLines = () =>
  logged
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as Record<string, unknown>);

describe('POST /api/v1/webhooks/github', () => {
  it('a signed push to the followed branch asks for a fetch once, with ref and after, and answers 202', async () => {
    const r = await github(githubPush());
    expect(r.statusCode).toBe(202);
    expect(r.json()).toEqual({ ok: true, fetch: true, ref: 'refs/heads/main', after: SHA });
    expect(pushes).toEqual([{ provider: 'github', kind: 'push', ref: 'refs/heads/main', after: SHA, repository: 'acme/fleet' }]);
    expect(logLines().find((l) => l.msg === 'webhook push: fetching')).toMatchObject({ provider: 'github', ref: 'refs/heads/main', after: SHA });
    expect(logged).not.toContain(MARKER);
  });

  it('a bad signature is 401, never calls back, and logs provider, address and reason but no payload or secret', async () => {
    const body = JSON.stringify(githubPush());
    const forged = `sha256=${hmac(body, 'guessed secret')}`;
    const r = await github(body, { 'x-hub-signature-256': forged });
    expect(r.statusCode).toBe(401);
    expect(r.json().error).toMatchObject({ code: 'DF_ERR_WEBHOOK_SIGNATURE', message: 'signature does not match the body and the configured secret' });
    expect(pushes).toEqual([]);

    const warn = logLines().filter((l) => l.msg === 'webhook refused');
    expect(warn).toHaveLength(1);
    expect(warn[0]).toMatchObject({ level: 40, provider: 'github', remoteAddress: '127.0.0.1', status: 401, reason: 'signature does not match the body and the configured secret' });
    for (const secret of [SECRET, forged, forged.slice(7), hmac(body), MARKER, 'acme/fleet']) expect(logged).not.toContain(secret);
    expect(r.body).not.toContain(MARKER);
  });

  it('a tampered body with the original signature is 401', async () => {
    const body = JSON.stringify(githubPush());
    const r = await github(body.replace('refs/heads/main', 'refs/heads/evil'), { 'x-hub-signature-256': `sha256=${hmac(body)}` });
    expect(r.statusCode).toBe(401);
    expect(pushes).toEqual([]);
  });

  it('a missing signature is 401 and says how to fix it', async () => {
    const r = await app.inject({ method: 'POST', url: '/api/v1/webhooks/github', headers: { 'content-type': 'application/json', 'x-github-event': 'push' }, payload: githubPush() });
    expect(r.statusCode).toBe(401);
    expect(r.json().error.message).toMatch(/missing X-Hub-Signature-256/);
    expect(r.json().error.hint).toMatch(/DRAGONFLY_WEBHOOK_SECRET/);
  });

  it('without a configured secret every webhook is refused with 403', async () => {
    await start({ webhookSecret: undefined });
    const r = await github(githubPush());
    expect(r.statusCode).toBe(403);
    expect(r.json().error).toMatchObject({ code: 'DF_ERR_WEBHOOK_DISABLED', message: 'no webhook secret configured: set DRAGONFLY_WEBHOOK_SECRET' });
    expect(pushes).toEqual([]);
    // An empty secret is no secret.
    await start({ webhookSecret: '' });
    expect((await github(githubPush(), { 'x-hub-signature-256': `sha256=${hmac(JSON.stringify(githubPush()), '')}` })).statusCode).toBe(403);
  });

  it('a push to another branch, or a tag, is accepted and ignored (202)', async () => {
    for (const ref of ['refs/heads/dev', 'refs/tags/v1', 'refs/heads/main-old']) {
      const r = await github(githubPush(ref));
      expect(r.statusCode, ref).toBe(202);
      expect(r.json().ignored, ref).toContain(`push to ${ref}; this server follows refs/heads/main`);
    }
    expect(pushes).toEqual([]);
  });

  it('without a configured branch any branch push (but no tag) triggers a fetch', async () => {
    await start({ webhookBranch: undefined });
    expect((await github(githubPush('refs/tags/v1'))).statusCode).toBe(202);
    expect((await github(githubPush('refs/heads/dev'))).json()).toMatchObject({ fetch: true, ref: 'refs/heads/dev' });
    expect(pushes.map((p) => p.ref)).toEqual(['refs/heads/dev']);
  });

  it('ping is 200; other events are 202 ignored', async () => {
    const ping = await github({ zen: 'Design for failure.', hook_id: 1, hook: { type: 'Repository' }, repository: { full_name: 'acme/fleet' } }, {}, 'ping');
    expect(ping.statusCode).toBe(200);
    expect(ping.json()).toEqual({ ok: true, event: 'ping' });
    const issue = await github({ action: 'opened', issue: {} }, {}, 'issues');
    expect(issue.statusCode).toBe(202);
    expect(issue.json().ignored).toBe('not a push event');
    expect(pushes).toEqual([]);
  });

  it('a signed body that is not a JSON object is 400', async () => {
    for (const body of ['{"ref": "refs/heads/main"', '[]', 'null']) {
      const r = await github(body);
      expect(r.statusCode, body).toBe(400);
      expect(r.json().error.code).toBe('DF_ERR_WEBHOOK_PAYLOAD');
    }
    expect(pushes).toEqual([]);
  });

  it('accepts the form encoding (payload=) and refuses other content types with 415', async () => {
    const form = new URLSearchParams({ payload: JSON.stringify(githubPush()) }).toString();
    const r = await github(form, { 'content-type': 'application/x-www-form-urlencoded' });
    expect(r.statusCode).toBe(202);
    expect(pushes).toHaveLength(1);
    const text = await github(JSON.stringify(githubPush()), { 'content-type': 'text/plain' });
    expect(text.statusCode).toBe(415);
    expect(text.json().error.message).toMatch(/application\/json/);
  });

  it('bodies up to 1 MiB are read (above the server-wide 256 KiB); larger ones are 413', async () => {
    const big = { ...githubPush(), padding: 'x'.repeat(700 * 1024) };
    expect((await github(big)).statusCode).toBe(202);
    const huge = { ...githubPush(), padding: 'x'.repeat(1024 * 1024) };
    const r = await github(huge);
    expect(r.statusCode).toBe(413);
    expect(r.json().error.message).toBe('request body too large');
    expect(pushes).toHaveLength(1);
  });

  it('does not wait for the callback, and survives one that throws or rejects', async () => {
    await start({ onWebhookPush: () => new Promise(() => {}) });
    expect((await github(githubPush())).statusCode).toBe(202);
    await start({ onWebhookPush: () => Promise.reject(new Error('fetch failed')) });
    expect((await github(githubPush())).statusCode).toBe(202);
    await start({
      onWebhookPush: () => {
        throw new Error('boom');
      },
    });
    expect((await github(githubPush())).statusCode).toBe(202);
    expect(logLines().some((l) => l.msg === 'webhook push handler failed')).toBe(true);
  });

  it('a server that follows no repository says so', async () => {
    await start({ onWebhookPush: undefined });
    const r = await github(githubPush());
    expect(r.statusCode).toBe(202);
    expect(r.json().ignored).toMatch(/does not follow a git repository/);
  });

  it('is rate-limited per source address, so a flood cannot fetch in a loop', async () => {
    await start({ webhooksPerMinute: 3 });
    const codes: number[] = [];
    for (let i = 0; i < 6; i++) codes.push((await github(githubPush())).statusCode);
    expect(codes).toEqual([202, 202, 202, 429, 429, 429]);
    expect(pushes).toHaveLength(3);
  });
});

describe('POST /api/v1/webhooks/gitlab and /gitea', () => {
  it('GitLab: the right X-Gitlab-Token and a Push Hook ask for a fetch', async () => {
    const payload = {
      object_kind: 'push',
      event_name: 'push',
      before: '95790bf891e76fee5e1747ab589903a6a1f80f22',
      after: SHA,
      ref: 'refs/heads/main',
      ref_protected: true,
      checkout_sha: SHA,
      user_username: 'jsmith',
      project_id: 15,
      project: { id: 15, name: 'fleet', path_with_namespace: 'infra/fleet', default_branch: 'main' },
      commits: [{ id: SHA, message: MARKER }],
      total_commits_count: 1,
    };
    const send = (token: string, event = 'Push Hook') =>
      app.inject({ method: 'POST', url: '/api/v1/webhooks/gitlab', headers: { 'content-type': 'application/json', 'x-gitlab-event': event, 'x-gitlab-token': token }, payload });
    const ok = await send(SECRET);
    expect(ok.statusCode).toBe(202);
    expect(pushes).toEqual([{ provider: 'gitlab', kind: 'push', ref: 'refs/heads/main', after: SHA, repository: 'infra/fleet' }]);

    const bad = await send('wrong-token-MARKER');
    expect(bad.statusCode).toBe(401);
    expect(pushes).toHaveLength(1);
    expect(logged).not.toContain('wrong-token');
    expect(logged).not.toContain(SECRET);
    expect(logged).not.toContain(MARKER);
  });

  it('Gitea: a signed push (X-Gitea-Signature, hex without prefix) asks for a fetch', async () => {
    const body = JSON.stringify({ ...githubPush(), repository: { id: 1, name: 'fleet', full_name: 'ops/fleet' } });
    const send = (sig: string) =>
      app.inject({ method: 'POST', url: '/api/v1/webhooks/gitea', headers: { 'content-type': 'application/json', 'x-gitea-event': 'push', 'x-gitea-signature': sig }, payload: body });
    const ok = await send(hmac(body));
    expect(ok.statusCode).toBe(202);
    expect(pushes).toEqual([{ provider: 'gitea', kind: 'push', ref: 'refs/heads/main', after: SHA, repository: 'ops/fleet' }]);
    expect((await send(`sha256=${hmac(body)}`)).statusCode).toBe(401);
    expect((await send(hmac(body, 'other'))).statusCode).toBe(401);
    expect(pushes).toHaveLength(1);
  });

  it('unknown forges are 404, and other routes keep parsing JSON as before', async () => {
    expect((await app.inject({ method: 'POST', url: '/api/v1/webhooks/bitbucket', payload: {} })).statusCode).toBe(404);
    // The agent API still parses JSON (a bad body is a schema 400, not a raw Buffer).
    const r = await app.inject({ method: 'POST', url: '/api/v1/agent/register', payload: { mac: 'not-a-mac' } });
    expect(r.statusCode).toBe(400);
    expect(r.json().error.code).toBe('DF_ERR_BAD_REQUEST');
    const ok = await app.inject({
      method: 'POST',
      url: '/api/v1/agent/register',
      payload: {
        mac: '52:54:00:ab:cd:01',
        hardware: {
          cpu: { model: 'QEMU', cores: 1, threads: 1 },
          memoryBytes: 2 ** 30,
          disks: [{ name: 'vda', path: '/dev/vda', sizeBytes: 2 ** 31, rotational: false, removable: false, partitions: [] }],
          nics: [{ name: 'eth0', mac: '52:54:00:ab:cd:01', link: true }],
        },
      },
    });
    expect(ok.statusCode).toBe(200);
    expect(ok.json().instruction).toBe('wait');
  });
});
