import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { MAX_WEBHOOK_BODY, verifyWebhook, type WebhookHeaders } from './webhooks.js';

const SECRET = 'It’s a Secret to Everybody';
const SHA = '0d1a26e67d8f5eaf1f6ba5c57fc3c7d91ac0fd1c';

const hmac = (body: Buffer | string, secret = SECRET) => createHmac('sha256', secret).update(body).digest('hex');

const githubPush = {
  ref: 'refs/heads/main',
  before: '6113728f27ae82c7b1a177c8d03f9e96e0adf246',
  after: SHA,
  repository: { id: 1, name: 'fleet', full_name: 'acme/fleet', default_branch: 'main' },
  pusher: { name: 'octocat', email: 'octocat@example.com' },
  commits: [{ id: SHA, message: 'web-01: bump generation', added: [], removed: [], modified: ['assignments/web.yaml'] }],
};
const gitlabPush = { object_kind: 'push', ref: 'refs/heads/main', before: '0'.repeat(40), after: SHA, checkout_sha: SHA, project: { path_with_namespace: 'infra/fleet' } };

const body = (o: unknown) => Buffer.from(JSON.stringify(o));

function github(b: Buffer, over: WebhookHeaders = {}): WebhookHeaders {
  return { 'content-type': 'application/json', 'x-github-event': 'push', 'x-hub-signature-256': `sha256=${hmac(b)}`, ...over };
}
function gitea(b: Buffer, over: WebhookHeaders = {}): WebhookHeaders {
  return { 'content-type': 'application/json', 'x-gitea-event': 'push', 'x-gitea-signature': hmac(b), ...over };
}
function gitlab(over: WebhookHeaders = {}): WebhookHeaders {
  return { 'content-type': 'application/json', 'x-gitlab-event': 'Push Hook', 'x-gitlab-token': SECRET, ...over };
}

describe('verifyWebhook: GitHub', () => {
  const b = body(githubPush);

  it('matches the example in GitHub docs (HMAC-SHA256 of the raw body, hex)', () => {
    // "Hello, World!" with "It's a Secret to Everybody" (ASCII apostrophe), from GitHub's documentation.
    expect(createHmac('sha256', "It's a Secret to Everybody").update('Hello, World!').digest('hex')).toBe(
      '757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17',
    );
  });

  it('accepts a correctly signed push and reads ref, after and the repository', () => {
    expect(verifyWebhook('github', github(b), b, SECRET)).toEqual({
      ok: true,
      event: { provider: 'github', kind: 'push', ref: 'refs/heads/main', after: SHA, repository: 'acme/fleet' },
    });
  });

  it('accepts ping and classifies other events', () => {
    const ping = body({ zen: 'Keep it logically awesome.', hook_id: 1, repository: { full_name: 'acme/fleet' } });
    expect(verifyWebhook('github', github(ping, { 'x-github-event': 'ping' }), ping, SECRET)).toEqual({
      ok: true,
      event: { provider: 'github', kind: 'ping', repository: 'acme/fleet' },
    });
    const issue = body({ action: 'opened' });
    expect(verifyWebhook('github', github(issue, { 'x-github-event': 'issues' }), issue, SECRET)).toMatchObject({ ok: true, event: { kind: 'other' } });
  });

  it('header names are case-insensitive and upper-case hex is accepted', () => {
    const h = { 'Content-Type': 'application/json; charset=utf-8', 'X-GitHub-Event': 'push', 'X-Hub-Signature-256': `sha256=${hmac(b).toUpperCase()}` };
    expect(verifyWebhook('github', h, b, SECRET).ok).toBe(true);
  });

  it.each([
    ['a tampered body', (h: WebhookHeaders) => h, Buffer.from(b.toString().replace('main', 'mair'))],
    ['a wrong secret', () => github(b, { 'x-hub-signature-256': `sha256=${hmac(b, 'other secret')}` }), b],
    ['a missing header', () => github(b, { 'x-hub-signature-256': undefined }), b],
    ['no sha256= prefix', () => github(b, { 'x-hub-signature-256': hmac(b) }), b],
    ['the old SHA-1 prefix', () => github(b, { 'x-hub-signature-256': `sha1=${hmac(b).slice(0, 40)}` }), b],
    ['a short signature', () => github(b, { 'x-hub-signature-256': `sha256=${hmac(b).slice(0, 62)}` }), b],
    ['a long signature', () => github(b, { 'x-hub-signature-256': `sha256=${hmac(b)}00` }), b],
    ['non-hex digits', () => github(b, { 'x-hub-signature-256': `sha256=${'zz'.repeat(32)}` }), b],
    ['a repeated header', () => github(b, { 'x-hub-signature-256': [`sha256=${hmac(b)}`, `sha256=${hmac(b)}`] }), b],
  ])('refuses %s with 401', (_name, headers, sent) => {
    const r = verifyWebhook('github', headers(github(b)), sent, SECRET);
    expect(r).toMatchObject({ ok: false, status: 401 });
    if (!r.ok) expect(r.reason).not.toContain(hmac(b));
  });

  it('refuses a signed body that is not a JSON object with 400, after checking the signature', () => {
    for (const text of ['not json', '[1,2]', 'null', '"main"', '']) {
      const t = Buffer.from(text);
      expect(verifyWebhook('github', github(t), t, SECRET), text).toMatchObject({ ok: false, status: 400, reason: 'body is not a JSON object' });
      expect(verifyWebhook('github', github(t, { 'x-hub-signature-256': `sha256=${'0'.repeat(64)}` }), t, SECRET), text).toMatchObject({ ok: false, status: 401 });
    }
  });

  it('refuses a push without a usable ref, a missing event header, and a bad content type', () => {
    const noRef = body({ ...githubPush, ref: 'main; rm -rf /' });
    expect(verifyWebhook('github', github(noRef), noRef, SECRET)).toMatchObject({ ok: false, status: 400 });
    expect(verifyWebhook('github', github(b, { 'x-github-event': undefined }), b, SECRET)).toMatchObject({ ok: false, status: 400 });
    expect(verifyWebhook('github', github(b, { 'content-type': 'text/plain' }), b, SECRET)).toMatchObject({ ok: false, status: 415 });
    expect(verifyWebhook('github', github(b, { 'content-type': undefined }), b, SECRET)).toMatchObject({ ok: false, status: 415 });
  });

  it('supports the form encoding (payload=), signed over the raw form body', () => {
    const form = Buffer.from(new URLSearchParams({ payload: JSON.stringify(githubPush) }).toString());
    const h = github(form, { 'content-type': 'application/x-www-form-urlencoded' });
    expect(verifyWebhook('github', h, form, SECRET)).toMatchObject({ ok: true, event: { kind: 'push', ref: 'refs/heads/main', after: SHA } });
    const empty = Buffer.from('other=1');
    expect(verifyWebhook('github', github(empty, { 'content-type': 'application/x-www-form-urlencoded' }), empty, SECRET)).toMatchObject({ ok: false, status: 400 });
  });

  it('leaves out an `after` that is not a commit id', () => {
    const odd = body({ ...githubPush, after: 'HEAD' });
    const r = verifyWebhook('github', github(odd), odd, SECRET);
    expect(r).toEqual({ ok: true, event: { provider: 'github', kind: 'push', ref: 'refs/heads/main', repository: 'acme/fleet' } });
  });

  it('refuses without a secret (403) and above the size cap (413) before looking at the signature', () => {
    expect(verifyWebhook('github', github(b, { 'x-hub-signature-256': `sha256=${createHmac('sha256', '').update(b).digest('hex')}` }), b, '')).toMatchObject({ ok: false, status: 403 });
    const big = Buffer.alloc(MAX_WEBHOOK_BODY + 1, 0x20);
    expect(verifyWebhook('github', github(big), big, SECRET)).toMatchObject({ ok: false, status: 413 });
  });
});

describe('verifyWebhook: GitLab', () => {
  const b = body(gitlabPush);

  it('accepts the right token and reads the push', () => {
    expect(verifyWebhook('gitlab', gitlab(), b, SECRET)).toEqual({
      ok: true,
      event: { provider: 'gitlab', kind: 'push', ref: 'refs/heads/main', after: SHA, repository: 'infra/fleet' },
    });
    expect(verifyWebhook('gitlab', gitlab({ 'x-gitlab-event': 'Tag Push Hook' }), b, SECRET)).toMatchObject({ ok: true, event: { kind: 'other' } });
  });

  it.each([
    ['a wrong token', { 'x-gitlab-token': 'It’s a secret to everybody' }],
    ['a longer token', { 'x-gitlab-token': `${SECRET}x` }],
    ['a prefix of the token', { 'x-gitlab-token': SECRET.slice(0, 5) }],
    ['an empty token', { 'x-gitlab-token': '' }],
    ['a missing token', { 'x-gitlab-token': undefined }],
    ['a huge token', { 'x-gitlab-token': 'x'.repeat(5000) }],
  ])('refuses %s with 401', (_name, over) => {
    expect(verifyWebhook('gitlab', gitlab(over), b, SECRET)).toMatchObject({ ok: false, status: 401 });
  });

  it('refuses a non-JSON body and the form encoding', () => {
    expect(verifyWebhook('gitlab', gitlab(), Buffer.from('{"ref":'), SECRET)).toMatchObject({ ok: false, status: 400 });
    expect(verifyWebhook('gitlab', gitlab({ 'content-type': 'application/x-www-form-urlencoded' }), b, SECRET)).toMatchObject({ ok: false, status: 415 });
  });
});

describe('verifyWebhook: Gitea', () => {
  const b = body(githubPush);

  it('accepts a correctly signed push (hex, no prefix), and the Forgejo header', () => {
    expect(verifyWebhook('gitea', gitea(b), b, SECRET)).toEqual({
      ok: true,
      event: { provider: 'gitea', kind: 'push', ref: 'refs/heads/main', after: SHA, repository: 'acme/fleet' },
    });
    const forgejo = { 'content-type': 'application/json', 'x-gitea-event': 'push', 'x-forgejo-signature': hmac(b) };
    expect(verifyWebhook('gitea', forgejo, b, SECRET).ok).toBe(true);
  });

  it.each([
    ['a tampered body', {}, Buffer.from(b.toString().replace(SHA, SHA.replace('0', '1')))],
    ['a wrong secret', { 'x-gitea-signature': hmac(b, 'nope') }, b],
    ['a missing header', { 'x-gitea-signature': undefined }, b],
    ['a sha256= prefix', { 'x-gitea-signature': `sha256=${hmac(b)}` }, b],
    ['a short signature', { 'x-gitea-signature': hmac(b).slice(2) }, b],
  ])('refuses %s with 401', (_name, over, sent) => {
    expect(verifyWebhook('gitea', gitea(b, over), sent, SECRET)).toMatchObject({ ok: false, status: 401 });
  });

  it('refuses a signed non-JSON body with 400', () => {
    const t = Buffer.from('<xml/>');
    expect(verifyWebhook('gitea', gitea(t), t, SECRET)).toMatchObject({ ok: false, status: 400 });
  });
});

describe('verifyWebhook: reasons', () => {
  it('never carry the secret, a header value or the body', () => {
    const b = Buffer.from(JSON.stringify({ ref: 'refs/heads/main', marker: 'MARKER-7f3a' }));
    const cases: [Parameters<typeof verifyWebhook>[0], WebhookHeaders][] = [
      ['github', github(b, { 'x-hub-signature-256': `sha256=${'ab'.repeat(32)}` })],
      ['github', github(b, { 'x-hub-signature-256': 'sha256=MARKER-sig' })],
      ['gitlab', gitlab({ 'x-gitlab-token': 'MARKER-token' })],
      ['gitea', gitea(b, { 'x-gitea-signature': 'MARKER-sig' })],
    ];
    for (const [provider, h] of cases) {
      const r = verifyWebhook(provider, h, b, SECRET);
      expect(r.ok).toBe(false);
      if (!r.ok) {
        expect(r.reason).not.toMatch(/MARKER|abab|Secret/);
      }
    }
  });
});
