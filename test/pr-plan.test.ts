// Pull-request review through the real `dragonfly` binary: `plan --base --head` and `diff`, on a local
// clone (--fleet, read with the git CLI) and on a repository served over smart HTTP (--repo).
import { machineYaml, templateYaml } from '../reconciler/test-builders.js';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, ROOT, dragonfly, type CliResult } from './cli-helpers.js';
import { createRepo, startGitHttp, tempDir, type GitHttpServer, type TestRepo } from './git-http.js';

/** The CLI without blocking this process: the git HTTP server answers from this very event loop. */
function dragonflyAsync(args: string[]): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, NO_COLOR: '1', DRAGONFLY_STATE: '' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('error', reject);
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

const machine = (name: string, mac: string, labels: string) => machineYaml(name, mac, labels);

const TEMPLATE = templateYaml('ubuntu', 'writefile: {partition: 1, path: /etc/hostname, content: "${machine.name}\\n"}');
const ASSIGNMENT = `apiVersion: dragonfly.computer/v1\nkind: Assignment\nmetadata: {name: web}\nspec: {template: ubuntu, selector: {role: web}}\n`;

let tmp: { dir: string; cleanup: () => void };
let server: GitHttpServer;
let repo: TestRepo;
let state: string;
let fleetDir: string;
let sha: { main: string; feature: string; broken: string; quiet: string };

beforeAll(async () => {
  tmp = tempDir('dragonfly-pr-');
  server = await startGitHttp({ root: path.join(tmp.dir, 'served') });
  repo = await createRepo(server.root, 'fleet.git', path.join(tmp.dir, 'work'));
  fleetDir = path.join(repo.work, 'fleet');
  state = path.join(tmp.dir, 'state');

  // main, first commit: what the store has applied.
  repo.writeAll({
    'README.md': '# our fleet\n',
    '.github/workflows/plan.yaml': 'on: pull_request\n',
    'fleet/templates/ubuntu.yaml': TEMPLATE,
    'fleet/assignments/web.yaml': ASSIGNMENT,
    'fleet/machines/web.yaml': machine('web-01', '52:54:00:00:00:01', 'role: web, rack: r1') + '---\n' + machine('web-02', '52:54:00:00:00:02', 'role: web, rack: r1'),
  });
  await repo.commitAndPush('fleet: web-01 and web-02');
  const applied = dragonfly(['apply', '--fleet', fleetDir, '--state', state, '--auto-approve']);
  expect(applied.stderr).toBe('');
  expect(applied.status).toBe(0);

  // main, second commit, not applied yet: web-05 is a change of the base as much as of any branch.
  repo.write('fleet/machines/web-05.yaml', machine('web-05', '52:54:00:00:00:05', 'role: web, rack: r3'));
  sha = { main: await repo.commitAndPush('fleet: web-05'), feature: '', broken: '', quiet: '' };

  // feature: adds web-03 and moves web-01 to rack r2.
  await repo.git(['checkout', '-q', '-b', 'feature']);
  repo.write('fleet/machines/web.yaml', machine('web-01', '52:54:00:00:00:01', 'role: web, rack: r2') + '---\n' + machine('web-02', '52:54:00:00:00:02', 'role: web, rack: r1'));
  repo.write('fleet/machines/web-03.yaml', machine('web-03', '52:54:00:00:00:03', 'role: web, rack: r2'));
  sha.feature = await repo.commit('web-03; web-01 to rack r2');
  await repo.push({ ref: 'HEAD:refs/heads/feature' });

  // broken: feature plus a machine with a malformed MAC.
  await repo.git(['checkout', '-q', '-b', 'broken']);
  repo.write('fleet/machines/bad.yaml', 'apiVersion: dragonfly.computer/v1\nkind: Machine\nmetadata: {name: web-04, labels: {role: web}}\nspec: {mac: "52:54:00:00:00:0g"}\n');
  sha.broken = await repo.commit('a typo');
  await repo.push({ ref: 'HEAD:refs/heads/broken' });

  // quiet: main plus comments and an unused template: resources change, the plan does not.
  await repo.git(['checkout', '-q', '-b', 'quiet', 'main']);
  repo.write('fleet/assignments/web.yaml', '# the web servers\n' + ASSIGNMENT);
  repo.write('fleet/templates/spare.yaml', TEMPLATE.replace('name: ubuntu', 'name: spare'));
  sha.quiet = await repo.commit('comments, a spare template');
  await repo.push({ ref: 'HEAD:refs/heads/quiet' });
  await repo.git(['checkout', '-q', 'feature']);
});

afterAll(async () => {
  await server?.close();
  tmp?.cleanup();
});

const short = (s: string) => s.slice(0, 7);

/** What both sources must show for main..feature. */
function expectFeatureMarkdown(md: string): void {
  expect(md).toMatch(new RegExp(`^### Dragonfly plan for \`${short(sha.main)}\\.\\.${short(sha.feature)}\`\n`));
  expect(md).toContain('**Plan: 1 to add, 1 to change, 0 to reimage, 0 to retire.**');
  expect(md).toMatch(/^\| `~ update` \| `web-01` \| git changed labels<br>`labels: \{[^}]*"rack":"r1"[^}]*\} → \{[^}]*"rack":"r2"[^}]*\}` \|$/m);
  expect(md).toContain('| `+ register` | `web-03` | declared in git; not seen on the network yet |');
  // Resource-level edits.
  expect(md).toContain('#### Resources: 1 added, 1 changed, 0 removed');
  expect(md).toContain('| Machine `web-01` | changed | `machines/web.yaml` | `metadata.labels.rack`: `r1` → `r2` |');
  expect(md).toContain('| Machine `web-03` | added | `machines/web-03.yaml` |  |');
  // web-05 is registered by the base as well: not the branch's doing.
  expect(md).not.toContain('web-05');
  expect(md).toContain('1 change that the base would make as well is left out.');
  // Exactly two changes, in the table and in the details.
  expect(md.split('\n').filter((l) => /^\| `[+~!-] \w+` \| `/.test(l))).toHaveLength(2);
  expect(md).toContain('<details><summary>Changes (2)</summary>');
}

describe('plan --base --head on a local clone (--fleet)', () => {
  it('lists exactly what the branch changes, in Markdown, and exits 2 with --detailed-exitcode', () => {
    const r = dragonfly(['plan', '--fleet', fleetDir, '--base', 'main', '--head', 'feature', '--state', state, '--markdown', '--detailed-exitcode']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(2);
    expectFeatureMarkdown(r.stdout);
    expect(r.stdout).toContain('Fleet folder `fleet/`');
  });

  it('prints text and JSON too; without --detailed-exitcode changes exit 0', () => {
    const t = dragonfly(['plan', '--fleet', fleetDir, '--base', 'main', '--head', 'HEAD', '--state', state]);
    expect(t.status).toBe(0);
    expect(t.stdout).toContain(`Comparing base ${short(sha.main)} (main) → head ${short(sha.feature)} (HEAD) in fleet/, against store revision`);
    expect(t.stdout).toContain('  ~ Machine web-01 changed (machines/web.yaml)\n      metadata.labels.rack: r1 → r2\n');
    expect(t.stdout).toContain('  ~ update web-01 (52:54:00:00:00:01');
    expect(t.stdout).toContain('  + register web-03 (52:54:00:00:00:03');
    expect(t.stdout).not.toContain('web-05');
    expect(t.stdout).toMatch(/Plan: 1 to add, 1 to change, 0 to reimage, 0 to retire\.\n$/);

    const j = dragonfly(['plan', '--fleet', fleetDir, '--base', sha.main, '--head', 'feature', '--state', state, '--json']);
    expect(j.status).toBe(0);
    const review = JSON.parse(j.stdout);
    expect(review).toMatchObject({ base: { commit: sha.main, valid: true }, head: { ref: 'feature', commit: sha.feature, valid: true }, path: 'fleet', unchanged: 1, withdrawn: [] });
    expect(review.changes.map((c: { action: string; machine: { name: string } }) => `${c.action} ${c.machine.name}`).sort()).toEqual(['register web-03', 'update web-01']);
    expect(review.resources.summary).toEqual({ added: 1, changed: 1, removed: 0, moved: 0 });
  });

  it('a branch that changes no plan exits 0 with --detailed-exitcode, and still lists its resource edits', () => {
    const r = dragonfly(['plan', '--fleet', fleetDir, '--base', 'main', '--head', 'quiet', '--state', state, '--markdown', '--detailed-exitcode']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('**No changes: this branch does not change what apply would do.**');
    expect(r.stdout).toContain('| Template `spare` | added | `templates/spare.yaml` |  |');
    expect(r.stdout).not.toContain('Assignment `web`'); // a comment is not a change
  });

  it('what the base plans and the head no longer does is listed as no longer planned', () => {
    // The other way round (base = feature, head = main): main no longer registers web-03, nor updates web-01.
    const r = dragonfly(['plan', '--fleet', fleetDir, '--base', 'feature', '--head', 'main', '--state', state, '--markdown', '--detailed-exitcode']);
    expect(r.status).toBe(2);
    expect(r.stdout).toContain('#### No longer planned (2)');
    expect(r.stdout).toContain('- `~ update` `web-01`: git changed labels');
    expect(r.stdout).toContain('- `+ register` `web-03`: declared in git; not seen on the network yet');
    expect(r.stdout).toContain('| Machine `web-03` | removed | `machines/web-03.yaml` |  |');
  });

  it('an invalid head exits 1 with file:line:col, in the Markdown for the pull request too', () => {
    const md = dragonfly(['plan', '--fleet', fleetDir, '--base', 'main', '--head', 'broken', '--state', state, '--markdown', '--detailed-exitcode']);
    expect(md.status).toBe(1);
    expect(md.stdout).toContain(`**The fleet at \`${short(sha.broken)}\` (broken) is invalid: 1 error. Nothing is planned until it is fixed.**`);
    expect(md.stdout).toContain('machines/bad.yaml:4:13: DF_ERR_MAC spec.mac: string "52:54:00:00:00:0g" is not a MAC address');
    expect(md.stdout).toContain('| Machine `web-04` | added | `machines/bad.yaml` |  |');
    expect(md.stderr).toContain('machines/bad.yaml:4:13: DF_ERR_MAC');

    const text = dragonfly(['plan', '--fleet', fleetDir, '--base', 'main', '--head', 'broken', '--state', state]);
    expect(text.status).toBe(1);
    expect(text.stdout).toBe('');
    expect(text.stderr).toContain('machines/bad.yaml:4:13: DF_ERR_MAC');
    expect(text.stderr).toContain('error: DF_ERR_MAC the fleet has 1 error');

    const json = dragonfly(['plan', '--fleet', fleetDir, '--base', 'main', '--head', 'broken', '--state', state, '--json']);
    expect(json.status).toBe(1);
    const review = JSON.parse(json.stdout);
    expect(review.head.valid).toBe(false);
    expect(review.diagnostics[0]).toMatchObject({ code: 'DF_ERR_MAC', file: 'machines/bad.yaml', line: 4, col: 13 });
  });

  it('refuses what it cannot do, with a code and a hint', () => {
    const half = dragonfly(['plan', '--fleet', fleetDir, '--base', 'main', '--state', state]);
    expect(half.status).toBe(1);
    expect(half.stderr).toContain('DF_ERR_USAGE a branch plan needs both --base REF and --head REF');
    const out = dragonfly(['plan', '--fleet', fleetDir, '--base', 'main', '--head', 'feature', '--out', path.join(tmp.dir, 'p.json')]);
    expect(out.status).toBe(1);
    expect(out.stderr).toContain('DF_ERR_USAGE --out cannot be used with --base/--head');
    const ref = dragonfly(['plan', '--fleet', fleetDir, '--base', 'nope', '--head', 'feature', '--state', state]);
    expect(ref.status).toBe(1);
    expect(ref.stderr).toContain('DF_ERR_GIT_REF no branch, tag or commit named "nope"');
    const notRepo = dragonfly(['plan', '--fleet', path.join(ROOT, 'fleet.example'), '--base', 'a', '--head', 'b', '--state', state]);
    // /work/main itself may or may not be a clone: either way it is not one with these revisions.
    expect(notRepo.status).toBe(1);
    expect(notRepo.stderr).toMatch(/DF_ERR_GIT_(LOCAL|REF)/);
    const plain = tempDir('dragonfly-plain-');
    try {
      const r = dragonfly(['diff', 'a', 'b', '--fleet', plain.dir]);
      expect(r.status).toBe(1);
      expect(r.stderr).toContain('DF_ERR_GIT_LOCAL');
      expect(r.stderr).toContain('is not in a git working tree');
    } finally {
      plain.cleanup();
    }
  });
});

describe('plan --base --head on a repository over HTTP (--repo)', () => {
  it('shows the same review as the local clone, from a fresh cache under the state directory', async () => {
    const repoState = path.join(tmp.dir, 'repo-state');
    fs.cpSync(state, repoState, { recursive: true });
    const r = await dragonflyAsync(['plan', '--repo', server.url(repo.name), '--path', 'fleet', '--base', 'main', '--head', 'feature', '--state', repoState, '--markdown', '--detailed-exitcode']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(2);
    expectFeatureMarkdown(r.stdout);
    expect(fs.readdirSync(path.join(repoState, 'review', 'git'))).toHaveLength(1);

    const bad = await dragonflyAsync(['plan', '--repo', server.url(repo.name), '--path', 'fleet', '--base', 'main', '--head', 'broken', '--state', repoState, '--markdown']);
    expect(bad.status).toBe(1);
    expect(bad.stdout).toContain('machines/bad.yaml:4:13: DF_ERR_MAC');
  });
});

describe('diff', () => {
  it('lists resource-level changes between two revisions of a local clone', () => {
    const r = dragonfly(['diff', 'main', 'feature', '--fleet', fleetDir]);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(
      [
        `Comparing ${short(sha.main)} (main) → ${short(sha.feature)} (feature) in fleet/: 2 fleet files changed.`,
        '',
        '  ~ Machine web-01 changed (machines/web.yaml)',
        '      metadata.labels.rack: r1 → r2',
        '  + Machine web-03 added (machines/web-03.yaml)',
        '',
        'Resources: 1 added, 1 changed, 0 removed.',
        '',
      ].join('\n'),
    );
    const back = JSON.parse(dragonfly(['diff', 'feature', 'main', '--fleet', fleetDir, '--json']).stdout);
    expect(back.files).toEqual([
      { path: 'machines/web-03.yaml', change: 'deleted' },
      { path: 'machines/web.yaml', change: 'modified' },
    ]);
    expect(back.changes).toEqual([
      { kind: 'Machine', name: 'web-01', change: 'changed', file: 'machines/web.yaml', fields: [{ path: 'metadata.labels.rack', before: 'r2', after: 'r1' }] },
      { kind: 'Machine', name: 'web-03', change: 'removed', file: 'machines/web-03.yaml' },
    ]);
  });

  it('reads the fleet folder from the repository root with --path, and from a repository over HTTP', async () => {
    const local = dragonfly(['diff', 'main', 'quiet', '--fleet', repo.work, '--path', 'fleet', '--json']);
    expect(local.status).toBe(0);
    expect(JSON.parse(local.stdout).changes).toEqual([{ kind: 'Template', name: 'spare', change: 'added', file: 'templates/spare.yaml' }]);

    const remote = await dragonflyAsync(['diff', 'main', 'feature', '--repo', server.url(repo.name), '--path', 'fleet', '--state', path.join(tmp.dir, 'diff-state'), '--json']);
    expect(remote.stderr).toBe('');
    expect(remote.status).toBe(0);
    const d = JSON.parse(remote.stdout);
    expect(d.base.commit).toBe(sha.main);
    expect(d.head.commit).toBe(sha.feature);
    expect(d.changes.map((c: { change: string; name: string }) => `${c.change} ${c.name}`)).toEqual(['changed web-01', 'added web-03']);
    expect(d.summary).toEqual({ added: 1, changed: 1, removed: 0, moved: 0 });
  });

  it('takes exactly two revisions', () => {
    const r = dragonfly(['diff', 'main', '--fleet', fleetDir]);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain('DF_ERR_USAGE diff takes two revisions');
  });
});
