// `dragonfly serve` and `dragonfly watch` as a user runs them: real processes, real ports.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BIN, dragonfly, ROOT, tempDir } from './cli-helpers.js';
import { collect, freePort, until } from './process-helpers.js';

const dirs: string[] = [];
const children: ChildProcess[] = [];
afterEach(() => {
  // A failed assertion must not leave servers running after the test.
  for (const c of children.splice(0)) c.kill('SIGKILL');
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

describe('dragonfly serve', () => {
  it('logs readable lines with --log-format pretty (as on a terminal), JSON lines when piped', async () => {
    const state = tempDir();
    dirs.push(state);
    const http = await freePort();
    for (const [format, line] of [
      ['pretty', /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: HTTP listening \{"http":"127\.0\.0\.1:\d+"/m],
      ['json', /^\{"level":30,"time":\d+,.*"msg":"HTTP listening"\}$/m],
    ] as const) {
      const serve = spawn(process.execPath, [BIN, 'serve', '--state', state, '--http', `127.0.0.1:${http}`, '--tftp', 'off', '--no-mage-build', '--log-format', format], { cwd: ROOT, env: { ...process.env, NO_COLOR: '1' } });
      children.push(serve);
      const out = collect(serve);
      await until(`serve (${format}) to listen`, () => out.text().includes('HTTP listening'));
      serve.kill('SIGTERM');
      await new Promise((r) => serve.once('exit', r));
      expect(out.text()).toMatch(line);
    }
  });

  it('serves, is watched, and shuts down gracefully on SIGTERM', async () => {
    const state = tempDir();
    dirs.push(state);
    const [http, tftp] = [await freePort(), await freePort()];
    const serve = spawn(process.execPath, [BIN, 'serve', '--fleet', 'fleet.example', '--state', state, '--http', `127.0.0.1:${http}`, '--tftp', `127.0.0.1:${tftp}`, '--no-mage-build'], {
      cwd: ROOT,
      env: { ...process.env, DRAGONFLY_API_TOKEN: 'admin-token', DRAGONFLY_READ_TOKEN: 'read-token' },
    });
    children.push(serve);
    const serveOut = collect(serve);
    const base = `http://127.0.0.1:${http}`;
    await until('serve to listen', async () => (await fetch(`${base}/healthz`).catch(() => undefined))?.ok === true);
    // The log is pino JSON lines; with --fleet the controller applies the fleet at start.
    await until('the fleet applied', () => serveOut.text().includes('"msg":"applied"'));
    expect(serveOut.text()).toMatch(/"plan":"Plan: 8 to add, 0 to change, 0 to reimage, 0 to retire\."/);

    // --since 0 replays from the first revision, so it does not matter whether watch connects before or after.
    const watch = spawn(process.execPath, [BIN, 'watch', '--server', base, '--since', '0'], { cwd: ROOT, env: { ...process.env, DRAGONFLY_READ_TOKEN: 'read-token' } });
    children.push(watch);
    const watchOut = collect(watch);
    // A machine that is not in git PXE boots: it is discovered.
    expect((await fetch(`${base}/boot/52:54:00:a1:99:01`)).status).toBe(200);
    await until('watch to print the discovery', () => watchOut.text().includes('machine.discovered'));
    expect(watchOut.text()).toMatch(/CensusAbleMajorCage machine\.discovered: seen by pxe from 127\.0\.0\.1/);
    watch.kill('SIGTERM');

    // What the controller applied is what the running server answers; a CLI apply finds nothing left to do.
    const manual = dragonfly(['apply', '--fleet', 'fleet.example', '--state', state, '--auto-approve']);
    expect(manual.status).toBe(0);
    expect(manual.stdout).toMatch(/No changes/);
    expect((await fetch(`${base}/api/v1/machines`)).status).toBe(401);
    const machines = ((await (await fetch(`${base}/api/v1/machines`, { headers: { authorization: 'Bearer read-token' } })).json()) as { items: { name?: string; phase: string }[] }).items;
    expect(machines.find((m) => m.name === 'web-01')?.phase).toBe('Assigned');

    serve.kill('SIGTERM');
    const code = await new Promise<number | null>((r) => serve.once('exit', r));
    expect(code).toBe(0);
    expect(serveOut.text()).toContain('"msg":"stopped"');
  });

  it('refuses a bad configuration with a code, exit 1', () => {
    for (const [args, text] of [
      [['--http', 'nope'], '--http "nope" is not HOST:PORT'],
      [['--public-url', 'http://x/${evil}'], '--public-url must be a plain http(s) URL'],
      [['--dhcp', 'full'], 'only "proxy" is supported'],
      [['--dhcp', 'proxy'], '--dhcp proxy needs --dhcp-ip'],
      [['--chainload-ipxe'], '--chainload-ipxe changes what the proxyDHCP answers: it needs --dhcp proxy'],
      [['--dhcp', 'proxy', '--dhcp-ip', '127.0.0.1', '--chainload-ipxe', '--tftp', 'off'], 'cannot go with --tftp off'],
      [['--mage-dir', '/nonexistent', '--http', '127.0.0.1:0', '--tftp', 'off'], 'directory /nonexistent (for /mage/) does not exist'],
      [['--log-format', 'xml'], '--log-format takes json, pretty or auto, not "xml"'],
      [['--max-streams', '0'], '--max-streams takes a whole number of at least 1, not "0"'],
      [['--mage-dir', '/tmp', '--no-mage-build'], '--mage-dir serves the Mage in DIR and --no-mage-build serves none'],
    ] as const) {
      const state = tempDir();
      dirs.push(state);
      const r = dragonfly(['serve', '--state', state, ...args]);
      expect(r.status, args.join(' ')).toBe(1);
      expect(r.stderr).toContain('DF_ERR_SERVE_CONFIG');
      expect(r.stderr).toContain(text);
    }
  });

  // Building Mage into the state directory, and reusing it, is tested with the real build in test/mage-image.test.ts.
  it('--no-mage-build serves no Mage: no build, no STATE/mage, /mage/ 404s and the log says so', async () => {
    const state = tempDir();
    dirs.push(state);
    const http = await freePort();
    const serve = spawn(process.execPath, [BIN, 'serve', '--state', state, '--http', `127.0.0.1:${http}`, '--tftp', 'off', '--no-mage-build', '--log-format', 'json'], { cwd: ROOT });
    children.push(serve);
    const out = collect(serve);
    const base = `http://127.0.0.1:${http}`;
    await until('serve to listen', async () => (await fetch(`${base}/healthz`).catch(() => undefined))?.ok === true);
    expect((await fetch(`${base}/mage/initrd`)).status).toBe(404);
    expect(fs.existsSync(path.join(state, 'mage'))).toBe(false);
    serve.kill('SIGTERM');
    await new Promise((r) => serve.once('exit', r));
    expect(out.text()).toContain('--no-mage-build and no --mage-dir: discovery and imaging scripts point at /mage/vmlinuz and /mage/initrd, which will 404');
    expect(out.text()).not.toContain('Mage build');
  });
});
