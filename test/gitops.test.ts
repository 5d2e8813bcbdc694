// Issue #5's acceptance with real git: a bare repo served over smart HTTP (git http-backend behind the
// test's CGI wrapper), commits pushed with the git CLI, and `dragonfly serve --repo …` as a process.
// Each push is applied via a GitHub-signed webhook, and via polling alone; `dragonfly status` shows the
// new SHA; an invalid commit changes nothing and status shows its file:line:col; the next valid commit
// applies; `dragonfly history` names the commit authors.
import { spawn, type ChildProcess } from 'node:child_process';
import { createHmac } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, dragonfly, ROOT } from './cli-helpers.js';
import { createRepo, startGitHttp, tempDir, type GitHttpServer, type TestRepo } from './git-http.js';
import { collect, exited, freePort, until } from './process-helpers.js';

const SECRET = 'webhook-secret-for-tests';
let tmp: { dir: string; cleanup: () => void };
let server: GitHttpServer;
let repo: TestRepo;
const children: ChildProcess[] = [];

beforeAll(async () => {
  tmp = tempDir('dragonfly-gitops-');
  server = await startGitHttp({ root: path.join(tmp.dir, 'srv') });
  repo = await createRepo(path.join(tmp.dir, 'srv'), 'fleet.git', path.join(tmp.dir, 'work'));
  repo.copyDir(path.join(ROOT, 'fleet.example'), 'fleet');
  await repo.commitAndPush('the example fleet', { name: 'Ada Lovelace', email: 'ada@example.com' });
}, 60_000);

afterAll(async () => {
  for (const c of children) c.kill('SIGKILL');
  await server?.close();
  tmp?.cleanup();
});

function serve(state: string, port: number, extra: string[]): { child: ChildProcess; out: { text: () => string } } {
  fs.writeFileSync(path.join(tmp.dir, 'secret'), SECRET);
  const child = spawn(
    process.execPath,
    [BIN, 'serve', '--repo', server.url('fleet.git'), '--path', 'fleet', '--state', state, '--http', `127.0.0.1:${port}`, '--tftp', 'off', '--no-mage-build', '--webhook-secret-file', path.join(tmp.dir, 'secret'), ...extra],
    { cwd: ROOT },
  );
  children.push(child);
  return { child, out: collect(child) };
}

interface Status {
  controller: { applied?: { revision: string; author?: string }; seen?: { revision: string; valid: boolean; errors: string[] } } | null;
}
const status = (state: string): Status => JSON.parse(dragonfly(['status', '--state', state, '--json']).stdout) as Status;

async function pushWebhook(port: number, sha: string): Promise<Response> {
  const body = JSON.stringify({ ref: 'refs/heads/main', after: sha, repository: { full_name: 'infra/fleet' } });
  const signature = 'sha256=' + createHmac('sha256', SECRET).update(body).digest('hex');
  return fetch(`http://127.0.0.1:${port}/api/v1/webhooks/github`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-github-event': 'push', 'x-hub-signature-256': signature },
    body,
  });
}

describe('dragonfly serve --repo', () => {
  it('applies each push: by webhook (polling off), by polling alone; fails closed on an invalid commit', async () => {
    const state = path.join(tmp.dir, 'state');
    const port = await freePort();
    // 1. Polling effectively off (1 h): only the first fetch and webhooks bring revisions in.
    let s = serve(state, port, ['--poll', '1h']);
    const first = await repo.head();
    await until('the first commit applied', () => status(state).controller?.applied?.revision === first, 30_000, 200);
    expect(status(state).controller!.applied!.author).toBe('Ada Lovelace <ada@example.com>');

    repo.write('fleet/machines/rack1.yaml', fs.readFileSync(path.join(repo.work, 'fleet/machines/rack1.yaml'), 'utf8').replace('rack: r1', 'rack: r1-moved'));
    const second = await repo.commitAndPush('move rack1', { name: 'Bob Builder', email: 'bob@example.com' });
    const bad = await fetch(`http://127.0.0.1:${port}/api/v1/webhooks/github`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-github-event': 'push', 'x-hub-signature-256': 'sha256=' + '0'.repeat(64) }, body: '{"ref":"refs/heads/main"}' });
    expect(bad.status).toBe(401);
    expect((await pushWebhook(port, second)).status).toBe(202);
    await until('the webhook push applied', () => status(state).controller?.applied?.revision === second, 30_000, 200);
    const machines = JSON.parse(dragonfly(['machines', '--state', state, '--json']).stdout) as { name: string }[];
    expect(machines.length).toBeGreaterThan(0);
    s.child.kill('SIGTERM');
    expect(await exited(s.child)).toBe(0);

    // 2. Polling alone (no webhook): every 1 s.
    s = serve(state, port, ['--poll', '1s']);
    const third = await (async () => {
      repo.write('fleet/machines/rack1.yaml', fs.readFileSync(path.join(repo.work, 'fleet/machines/rack1.yaml'), 'utf8').replace('rack: r1-moved', 'rack: r1'));
      return repo.commitAndPush('rack1 back', { name: 'Bob Builder', email: 'bob@example.com' });
    })();
    await until('the polled push applied', () => status(state).controller?.applied?.revision === third, 30_000, 200);

    // 3. An invalid commit: nothing changes; status shows where the error is, and exits 1.
    const good = fs.readFileSync(path.join(repo.work, 'fleet/machines/rack1.yaml'), 'utf8');
    repo.write('fleet/machines/rack1.yaml', good.replace('rack: r1', 'rack: r9').replace(/mac: (\S+)/, 'mac: [$1'));
    const invalid = await repo.commitAndPush('broken', { name: 'Eve', email: 'eve@example.com' });
    await until('the invalid commit seen', () => status(state).controller?.seen?.revision === invalid, 30_000, 200);
    const st = status(state).controller!;
    expect(st.seen!.valid).toBe(false);
    expect(st.seen!.errors[0]).toMatch(/^machines\/rack1\.yaml:\d+:\d+: DF_ERR_/);
    expect(st.applied!.revision).toBe(third);
    const text = dragonfly(['status', '--state', state]);
    expect(text.status).toBe(1);
    expect(text.stdout).toContain(`Newest:    ${invalid}`);
    expect(text.stdout).toMatch(/INVALID: nothing is applied/);
    expect(text.stdout).toMatch(/machines\/rack1\.yaml:\d+:\d+: DF_ERR_/);

    // 4. The fix applies.
    repo.write('fleet/machines/rack1.yaml', good.replace('rack: r1', 'rack: r9'));
    const fixed = await repo.commitAndPush('fix', { name: 'Eve', email: 'eve@example.com' });
    await until('the fix applied', () => status(state).controller?.applied?.revision === fixed, 30_000, 200);
    expect(dragonfly(['status', '--state', state]).status).toBe(0);
    const history = dragonfly(['history', '--state', state]).stdout;
    expect(history).toContain('for Bob Builder <bob@example.com>');
    expect(history).toMatch(/rejected: \d+ error/);
    s.child.kill('SIGTERM');
    expect(await exited(s.child)).toBe(0);
    // The git credentials and webhook secret never reach the logs.
    expect(s.out.text()).not.toContain(SECRET);
  }, 150_000);
});
