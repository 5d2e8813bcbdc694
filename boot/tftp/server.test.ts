// The TFTP server against real clients (atftp, tftp-hpa, curl) on 127.0.0.1 and against a raw UDP peer
// that provokes the protocol's corner cases one packet at a time.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { encodeAck, encodeData, encodeError, encodeOack, encodeRequest, type TftpOption } from './packet.js';
import { startTftpServer, type TftpLog, type TftpServer, type TftpServerOptions } from './server.js';
import { combinedSource, directorySource, memorySource, type TftpSource } from './source.js';
import { RawPeer, runProcess, waitFor, type Received } from './test-client.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.join(HERE, '..', '..');
const UNDIONLY = '/usr/lib/ipxe/undionly.kpxe';
const ROLLOVER_SIZE = 34_000_000; // 66,407 blocks of 512: the block number wraps past 65535 once

let work: string;
let root: string;
let out: string;
const content: Record<string, Buffer> = {};

beforeAll(() => {
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-tftp-'));
  fs.chmodSync(work, 0o755);
  root = path.join(work, 'root');
  out = path.join(work, 'out');
  fs.mkdirSync(root);
  fs.mkdirSync(out);
  content['undionly.kpxe'] = fs.readFileSync(UNDIONLY);
  content['random20.bin'] = randomBytes(20 * 1024 * 1024);
  content['rollover.bin'] = randomBytes(ROLLOVER_SIZE);
  for (const [name, bytes] of Object.entries(content)) fs.writeFileSync(path.join(root, name), bytes);
  fs.writeFileSync(path.join(work, 'secret'), 'outside the root');
  // Like Debian's /usr/lib/ipxe/ipxe.efi -> /boot/ipxe.efi: a link, there before the server starts, to a file
  // outside the root. Its target is served (source.ts); links made after the start are not.
  content['linked.efi'] = randomBytes(300_000);
  fs.mkdirSync(path.join(work, 'boot'));
  fs.writeFileSync(path.join(work, 'boot', 'firmware.efi'), content['linked.efi']);
  fs.symlinkSync(path.join(work, 'boot', 'firmware.efi'), path.join(root, 'linked.efi'));
});

afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

// ---- helpers ----

interface LogEntry {
  level: 'debug' | 'info' | 'warn' | 'error';
  msg: string;
  obj: Record<string, unknown>;
}

function captureLog(): { log: TftpLog; entries: LogEntry[] } {
  const entries: LogEntry[] = [];
  const at = (level: LogEntry['level']) => (obj: object, msg?: string) => entries.push({ level, msg: msg ?? '', obj: obj as Record<string, unknown> });
  return { entries, log: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') } };
}

/** Wraps a source to prove every opened file is closed. */
function countingSource(inner: TftpSource) {
  const counts = { opened: 0, closed: 0 };
  const source: TftpSource = {
    async open(name) {
      const file = await inner.open(name);
      if (!file) return file;
      counts.opened++;
      let closed = false;
      return {
        size: file.size,
        read: (buffer, position) => file.read(buffer, position),
        close: async () => {
          if (!closed) counts.closed++;
          closed = true;
          await file.close();
        },
      };
    },
  };
  return { source, counts };
}

interface Harness {
  server: TftpServer;
  port: number;
  entries: LogEntry[];
  counts: { opened: number; closed: number };
  /** The negotiated parameters of the last transfer of `file`. */
  negotiated(file: string): Record<string, unknown> | undefined;
  close(): Promise<void>;
}

async function startHarness(opts: Partial<TftpServerOptions> = {}, source: TftpSource = directorySource(root)): Promise<Harness> {
  const { log, entries } = captureLog();
  const counted = countingSource(source);
  const server = await startTftpServer({ host: '127.0.0.1', port: 0, source: counted.source, log, ...opts });
  return {
    server,
    port: server.address().port,
    entries,
    counts: counted.counts,
    negotiated: (file) => entries.filter((e) => e.msg === 'tftp: transfer started' && e.obj.file === file).at(-1)?.obj,
    async close() {
      await server.close();
      expect(counted.counts.closed).toBe(counted.counts.opened);
      expect(server.stats().active).toBe(0);
    },
  };
}

function expectSameFile(outPath: string, name: string): void {
  const got = fs.readFileSync(outPath);
  const want = content[name]!;
  expect(got.length, `${outPath} size`).toBe(want.length);
  expect(got.equals(want), `${outPath} content`).toBe(true);
}

const atftp = (port: number, name: string, dest: string, options: string[] = []) =>
  runProcess('atftp', ['--get', '-r', name, '-l', dest, ...options.flatMap((o) => ['--option', o]), '127.0.0.1', String(port)]);

const curl = (port: number, name: string, dest: string, blksize?: number) =>
  runProcess('curl', ['-sS', ...(blksize ? ['--tftp-blksize', String(blksize)] : []), '-o', dest, `tftp://127.0.0.1:${port}/${name}`]);

const outFile = (label: string) => path.join(out, `${label}-${Math.random().toString(36).slice(2)}`);

// ---- real clients ----

describe('real clients, byte-identical transfers', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ maxBlksize: 65464 });
  });
  afterAll(() => h.close());

  for (const name of ['undionly.kpxe', 'random20.bin']) {
    it(`atftp blksize 1428 + tsize 0: ${name}`, async () => {
      const dest = outFile('atftp-1428');
      const r = await atftp(h.port, name, dest, ['blksize 1428', 'tsize 0']);
      expect(r.code, r.stderr).toBe(0);
      expectSameFile(dest, name);
      expect(h.negotiated(name)).toMatchObject({ blksize: 1428, windowsize: 1, oack: true });
    });

    it(`atftp windowsize 8: ${name}`, async () => {
      const dest = outFile('atftp-ws8');
      const r = await atftp(h.port, name, dest, ['windowsize 8']);
      expect(r.code, r.stderr).toBe(0);
      expectSameFile(dest, name);
      expect(h.negotiated(name)).toMatchObject({ blksize: 512, windowsize: 8 });
    });

    it(`atftp blksize 8192 + windowsize 16: ${name}`, async () => {
      const dest = outFile('atftp-8192');
      const r = await atftp(h.port, name, dest, ['blksize 8192', 'windowsize 16']);
      expect(r.code, r.stderr).toBe(0);
      expectSameFile(dest, name);
      // 16 × 8 KiB would overflow the client's receive buffer at every window: the server grants 8 (options.ts).
      expect(h.negotiated(name)).toMatchObject({ blksize: 8192, windowsize: 8 });
    });

    it(`curl --tftp-blksize 1468: ${name}`, async () => {
      const dest = outFile('curl');
      const r = await curl(h.port, name, dest, 1468);
      expect(r.code, r.stderr).toBe(0);
      expectSameFile(dest, name);
      expect(h.negotiated(name)).toMatchObject({ blksize: 1468 });
    });
  }

  it('atftp asking a 255 s timeout gets the file, the option declined; 5 s is accepted (RFC 2349)', async () => {
    const dest = outFile('atftp-timeout');
    const r = await atftp(h.port, 'undionly.kpxe', dest, ['timeout 255', 'tsize 0']);
    expect(r.code, r.stderr).toBe(0);
    expectSameFile(dest, 'undionly.kpxe');
    expect(h.negotiated('undionly.kpxe')).toMatchObject({ oack: true });
    expect(h.negotiated('undionly.kpxe')).not.toHaveProperty('timeoutMs');
    const r5 = await atftp(h.port, 'undionly.kpxe', dest, ['timeout 5']);
    expect(r5.code, r5.stderr).toBe(0);
    expect(h.negotiated('undionly.kpxe')).toMatchObject({ timeoutMs: 5000 });
  });

  it('rolls the block number over past 65535 (atftp, 512-byte blocks, no options)', async () => {
    const dest = outFile('rollover');
    const r = await atftp(h.port, 'rollover.bin', dest);
    expect(r.code, r.stderr).toBe(0);
    expectSameFile(dest, 'rollover.bin');
    expect(h.negotiated('rollover.bin')).toMatchObject({ blksize: 512, windowsize: 1, oack: false });
  });

  it('answers a missing file and a traversal with TFTP errors, and keeps serving', async () => {
    const missing = await curl(h.port, 'nosuch.bin', outFile('missing'));
    expect(missing.code).toBe(68); // CURLE_TFTP_NOTFOUND: TFTP error 1
    const traversal = await runProcess('curl', ['-sS', '--path-as-is', '-o', outFile('traversal'), `tftp://127.0.0.1:${h.port}/../etc/passwd`]);
    expect(traversal.code).toBe(69); // CURLE_TFTP_PERM: TFTP error 2
    const atftpMissing = await atftp(h.port, 'nosuch.bin', outFile('missing'));
    expect(atftpMissing.stderr).toMatch(/error received from server <"nosuch.bin": file not found>/);
    const atftpTraversal = await atftp(h.port, '../secret', outFile('traversal'));
    expect(atftpTraversal.stderr).toMatch(/error received from server <.*'\.\.' segments are refused>/);
    const dest = outFile('after-errors');
    expect((await curl(h.port, 'undionly.kpxe', dest, 1468)).code).toBe(0);
    expectSameFile(dest, 'undionly.kpxe');
  });

  it('a server with the default maxBlksize answers 1468 to a client asking 8192', async () => {
    const small = await startHarness();
    try {
      const dest = outFile('default-max');
      const r = await atftp(small.port, 'undionly.kpxe', dest, ['blksize 8192', 'tsize 0']);
      expect(r.code, r.stderr).toBe(0);
      expectSameFile(dest, 'undionly.kpxe');
      expect(small.negotiated('undionly.kpxe')).toMatchObject({ blksize: 1468 });
    } finally {
      await small.close();
    }
  });
});

describe('links out of the root: pinned at start, never followed from a request', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness();
  });
  afterAll(async () => {
    await h.close();
    fs.rmSync(path.join(root, 'late.efi'), { force: true });
  });

  it('serves the target of a link that was in the root at start, byte-identical (atftp, curl)', async () => {
    const dest = outFile('linked-atftp');
    const r = await atftp(h.port, 'linked.efi', dest, ['blksize 1468', 'tsize 0']);
    expect(r.code, r.stderr).toBe(0);
    expectSameFile(dest, 'linked.efi');
    const dest2 = outFile('linked-curl');
    expect((await curl(h.port, 'linked.efi', dest2, 1468)).code).toBe(0);
    expectSameFile(dest2, 'linked.efi');
  });

  it("serves Debian's /usr/lib/ipxe as a root: ipxe.efi, a link to /boot/ipxe.efi", async () => {
    const debian = await startHarness({}, directorySource('/usr/lib/ipxe'));
    try {
      const dest = outFile('debian-ipxe-efi');
      const r = await atftp(debian.port, 'ipxe.efi', dest, ['blksize 1468']);
      expect(r.code, r.stderr).toBe(0);
      expect(fs.readFileSync(dest).equals(fs.readFileSync('/usr/lib/ipxe/ipxe.efi'))).toBe(true);
    } finally {
      await debian.close();
    }
  });

  it('refuses traversal, absolute paths, backslashes and a link made after start, and keeps serving', async () => {
    fs.symlinkSync(path.join(work, 'secret'), path.join(root, 'late.efi'));
    const refusals: [string, RegExp][] = [
      ['../secret', /'\.\.' segments are refused/],
      ['../etc/passwd', /'\.\.' segments are refused/],
      ['/etc/passwd', /absolute paths are refused/],
      ['..\\secret', /backslashes are refused/],
      ['late.efi', /leads outside the TFTP root/],
    ];
    for (const [name, why] of refusals) {
      const dest = outFile('refused');
      const r = await atftp(h.port, name, dest);
      expect(r.stderr, name).toMatch(new RegExp(`error received from server <.*${why.source}`));
      expect(fs.existsSync(dest) ? fs.readFileSync(dest, 'utf8') : '', name).not.toContain('outside the root');
    }
    const dest = outFile('after-refusals');
    expect((await atftp(h.port, 'linked.efi', dest)).code).toBe(0);
    expectSameFile(dest, 'linked.efi');
  });
});

// tftp-hpa resolves its host with AI_ADDRCONFIG: in a host whose only IPv4 address is on lo, even
// "127.0.0.1" is an "unknown host". A network namespace with lo up and an empty bridge holding an IPv4
// address satisfies it everywhere; the server runs inside the namespace too, as a child process of the
// compiled server (dist/, built by test/global-setup.ts: bench/tftp.ts pulls boot/tftp into the build).
describe('tftp-hpa (no options) in a network namespace', () => {
  const ns = `dftftp${process.pid}`;
  const dist = path.join(REPO, 'dist', 'boot', 'tftp');
  let child: ReturnType<typeof spawn>;
  let port: number;
  const childOutput: string[] = [];

  beforeAll(async () => {
    if (!fs.existsSync(path.join(dist, 'server.js'))) throw new Error(`${dist}/server.js is missing: run npx tsc -p tsconfig.json`);
    const ip = (...args: string[]) => runProcess('ip', args).then((r) => expect(r.code, `ip ${args.join(' ')}: ${r.stderr}`).toBe(0));
    await ip('netns', 'add', ns);
    await ip('netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up');
    await ip('netns', 'exec', ns, 'ip', 'link', 'add', 'df0', 'type', 'bridge');
    await ip('netns', 'exec', ns, 'ip', 'addr', 'add', '10.255.255.1/32', 'dev', 'df0');
    await ip('netns', 'exec', ns, 'ip', 'link', 'set', 'df0', 'up');
    const script = [
      `const { startTftpServer } = await import(${JSON.stringify(path.join(dist, 'server.js'))});`,
      `const { directorySource } = await import(${JSON.stringify(path.join(dist, 'source.js'))});`,
      `const server = await startTftpServer({ host: '127.0.0.1', port: 0, source: directorySource(process.argv[1]) });`,
      `process.stdout.write(JSON.stringify(server.address()) + '\\n');`,
      `process.stdin.on('end', async () => { process.stdout.write(JSON.stringify(server.stats()) + '\\n'); await server.close(); process.exit(0); });`,
      `process.stdin.resume();`,
    ].join('\n');
    child = spawn('ip', ['netns', 'exec', ns, process.execPath, '--input-type=module', '-e', script, root], { stdio: ['pipe', 'pipe', 'inherit'] });
    child.stdout!.on('data', (d: Buffer) => childOutput.push(...d.toString().split('\n').filter(Boolean)));
    await waitFor(() => childOutput.length > 0, 10_000, 'the server in the namespace');
    port = (JSON.parse(childOutput[0]!) as { port: number }).port;
  });

  afterAll(async () => {
    if (child && child.exitCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve));
      child.stdin!.end();
      await exited;
    }
    await runProcess('ip', ['netns', 'del', ns]);
  });

  const tftpHpa = (name: string, dest: string) =>
    runProcess('ip', ['netns', 'exec', ns, 'tftp', '-4', '-m', 'binary', '127.0.0.1', String(port), '-c', 'get', name, dest]);

  for (const name of ['undionly.kpxe', 'random20.bin', 'linked.efi']) {
    it(`fetches ${name}`, async () => {
      const dest = outFile('tftp-hpa');
      const r = await tftpHpa(name, dest);
      expect(r.code, r.stderr + r.stdout).toBe(0);
      expectSameFile(dest, name);
    });
  }

  it('reports a missing file and a traversal as TFTP errors', async () => {
    const missing = await tftpHpa('nosuch.bin', outFile('x'));
    expect(missing.stdout + missing.stderr).toMatch(/Error code 1/);
    const traversal = await tftpHpa('../secret', outFile('x'));
    expect(traversal.stdout + traversal.stderr).toMatch(/Error code 2/);
  });

  it('the server in the namespace counted the transfers', async () => {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.stdin!.end();
    await exited;
    const stats = JSON.parse(childOutput.at(-1)!) as { transfers: number; errors: number; active: number; bytes: number };
    expect(stats).toMatchObject({ transfers: 3, active: 0 });
    expect(stats.bytes).toBe(content['undionly.kpxe']!.length + content['random20.bin']!.length + content['linked.efi']!.length);
    expect(stats.errors).toBe(2);
  });
});

describe('load and abuse', () => {
  it('200 concurrent curl clients, each from its own address, all receive undionly.kpxe byte-identical', async () => {
    const h = await startHarness();
    try {
      const dests = Array.from({ length: 200 }, (_, i) => outFile(`concurrent-${i}`));
      // 200 machines are 200 addresses (127.0.1.1–200): one address is held to maxTransfersPerHost.
      const results = await Promise.all(
        dests.map((dest, i) =>
          runProcess('curl', ['-sS', '--interface', `127.0.1.${i + 1}`, '--tftp-blksize', '1468', '-o', dest, `tftp://127.0.0.1:${h.port}/undionly.kpxe`]),
        ),
      );
      expect(results.filter((r) => r.code !== 0).map((r) => r.stderr)).toEqual([]);
      for (const dest of dests) expectSameFile(dest, 'undionly.kpxe');
      await waitFor(() => h.server.stats().active === 0, 10_000, 'all transfers to end');
      // Under this load a final ACK is now and then lost on the loopback: curl has the whole file and has left,
      // and the server counts the transfer as unconfirmed, its last block unacknowledged (RFC 1350 §6).
      const stats = h.server.stats();
      const size = content['undionly.kpxe']!.length;
      expect(stats).toMatchObject({ transfers: 200, errors: 0 });
      expect(stats.bytes + stats.unconfirmed * (size % 1468 || 1468)).toBe(200 * size);
    } finally {
      await h.close();
    }
  });

  it('survives 2,000 random datagrams on the request port, then serves normally', async () => {
    const h = await startHarness({ timeoutMs: 100, retries: 1 });
    const crashes: unknown[] = [];
    const onCrash = (e: unknown) => crashes.push(e);
    process.on('uncaughtException', onCrash);
    process.on('unhandledRejection', onCrash);
    const noisy = await Promise.all(Array.from({ length: 8 }, () => RawPeer.open()));
    // Requests for a real file come from ports of their own (a new request from the same port supersedes
    // the last one), so those transfers really start, get no ACK, and time out.
    const requesters = await Promise.all(Array.from({ length: 8 }, () => RawPeer.open()));
    const peers = [...noisy, ...requesters];
    try {
      const hugeOptions: TftpOption[] = Array.from({ length: 4000 }, (_, i) => ({ name: `opt${i}`, value: 'x'.repeat(i % 7) }));
      const fuzz: { msg: Buffer; from: RawPeer }[] = [];
      for (let i = 0; i < 2000; i++) {
        const v = Math.floor(i / 8); // the variant within each kind
        const real = encodeRequest('RRQ', v % 2 ? 'undionly.kpxe' : 'nosuch', 'octet', [{ name: 'blksize', value: '1468' }]);
        const push = (msg: Buffer, from = noisy[i % noisy.length]!) => fuzz.push({ msg, from });
        switch (i % 8) {
          case 0: push(randomBytes(v % 600)); break; // noise
          case 1: push(real.subarray(0, 2 + (v % (real.length - 3)))); break; // truncated RRQ
          case 2: // huge option lists; every fourth one for a real file
            if (v % 4 === 0) push(encodeRequest('RRQ', 'undionly.kpxe', 'octet', hugeOptions.slice(0, 1000 + v * 11)), requesters[(v / 4) % requesters.length]!);
            else push(encodeRequest('RRQ', `nosuch-${i}`, 'octet', hugeOptions.slice(0, 1000 + v * 11)));
            break;
          case 3: push(Buffer.concat([Buffer.from([1 + (v % 255), v % 256]), randomBytes(v % 50)])); break; // bogus opcode
          case 4: push([encodeAck(v), encodeData(v, randomBytes(10)), encodeOack([]), encodeError(0, 'x')][v % 4]!); break; // misdirected
          case 5: push(encodeRequest('WRQ', 'undionly.kpxe')); break;
          case 6: push(encodeRequest('RRQ', ['../etc/passwd', '/etc/passwd', 'a\\b', 'x', 'undionly.kpxe'][v % 5]!, ['netascii', 'mail', 'octet', 'bogus'][v % 4])); break;
          default: push(Buffer.concat([Buffer.from([0, 1]), randomBytes(1 + (v % 300))])); break; // RRQ opcode, garbage body
        }
      }
      for (let i = 0; i < fuzz.length; i += 20) {
        await Promise.all(fuzz.slice(i, i + 20).map(({ msg, from }) => from.send(msg, h.port)));
        await new Promise((resolve) => setImmediate(resolve)); // let the server read its socket
      }
      // Malformed datagrams, refused requests and timed-out transfers are counted: wait for most of them.
      await waitFor(() => h.server.stats().errors >= 1400, 20_000, 'the fuzz to be handled');
      await waitFor(() => h.server.stats().active === 0, 20_000, 'fuzz-started transfers to end');
      expect(h.server.stats().transfers).toBeGreaterThan(0); // some requests were valid: those transfers timed out
      const dest = outFile('after-fuzz');
      const r = await curl(h.port, 'undionly.kpxe', dest, 1468);
      expect(r.code, r.stderr).toBe(0);
      expectSameFile(dest, 'undionly.kpxe');
      expect(crashes).toEqual([]);
      expect(h.entries.filter((e) => e.level === 'error')).toEqual([]);
    } finally {
      process.off('uncaughtException', onCrash);
      process.off('unhandledRejection', onCrash);
      await Promise.all(peers.map((p) => p.close()));
      await h.close();
    }
  });

  it('refuses requests beyond maxTransfers as busy (error 0), and serves again once a slot frees', async () => {
    const h = await startHarness({ maxTransfers: 2, timeoutMs: 30_000 });
    const [a, b, c] = await Promise.all([RawPeer.open(), RawPeer.open(), RawPeer.open()]);
    try {
      const rrq = encodeRequest('RRQ', 'undionly.kpxe');
      await a.send(rrq, h.port);
      const da = await a.next();
      await b.send(rrq, h.port);
      const db = await b.next();
      expect([da.packet.op, db.packet.op]).toEqual(['DATA', 'DATA']);
      expect(h.server.stats().active).toBe(2);

      await c.send(rrq, h.port);
      const refused = await c.next();
      expect(refused.packet).toMatchObject({ op: 'ERROR', code: 0, message: expect.stringMatching(/busy/) });
      expect(refused.from.port).toBe(h.port);

      await a.send(encodeError(0, 'client gives up'), da.from.port);
      await waitFor(() => h.server.stats().active === 1, 5000, 'a slot to free');
      await c.send(rrq, h.port);
      expect((await c.next()).packet).toMatchObject({ op: 'DATA', block: 1 });
      expect(h.server.stats().active).toBe(2);
    } finally {
      await Promise.all([a.close(), b.close(), c.close()]);
      await h.close();
    }
  });
});

describe('lock-out (one host, many transfers that never ACK)', () => {
  it('one host gets maxTransfersPerHost slots and errors beyond; another host still gets its file; the slots free', async () => {
    // Defaults throughout: 200 transfers, 8 per host, 1 s wait, 5 retries. Before the per-host cap and the
    // timeout clamp, these 200 requests held every slot for 6 × 255 s.
    const h = await startHarness();
    const hogs = await Promise.all(Array.from({ length: 200 }, () => RawPeer.open('127.0.0.1')));
    try {
      const rrq = encodeRequest('RRQ', 'undionly.kpxe', 'octet', [{ name: 'timeout', value: '255' }, { name: 'tsize', value: '0' }]);
      await Promise.all(hogs.map((p) => p.send(rrq, h.port)));
      const first = await Promise.all(hogs.map((p) => p.next()));
      const accepted = hogs.filter((_, i) => first[i]!.packet.op === 'OACK');
      const refused = first.filter((r) => r.packet.op === 'ERROR');
      expect(accepted).toHaveLength(8);
      expect(refused).toHaveLength(192);
      for (const r of refused) expect(r.packet).toMatchObject({ op: 'ERROR', code: 0, message: expect.stringMatching(/too many transfers from 127\.0\.0\.1/) });
      // RFC 2349: a 255 s timeout is declined, not echoed.
      for (const r of first.filter((r) => r.packet.op === 'OACK')) {
        expect(r.packet).toEqual({ op: 'OACK', options: [{ name: 'tsize', value: String(content['undionly.kpxe']!.length) }] });
      }
      expect(h.server.stats()).toMatchObject({ active: 8, errors: 192 });
      // One log line for the burst, not 192.
      expect(h.entries.filter((e) => e.msg === 'tftp: too many transfers from one host, requests refused')).toHaveLength(1);

      // Another machine is served meanwhile, by a real client.
      const dest = outFile('second-host');
      const r = await runProcess('curl', ['-sS', '--interface', '127.0.0.2', '--tftp-blksize', '1468', '-o', dest, `tftp://127.0.0.1:${h.port}/undionly.kpxe`]);
      expect(r.code, r.stderr).toBe(0);
      expectSameFile(dest, 'undionly.kpxe');

      // The server's own wait applies: each silent transfer gets its OACK 5 more times, then is given up.
      for (const p of accepted) {
        const after = [];
        for (let i = 0; i < 6; i++) after.push((await p.next(10_000)).packet);
        expect(after.slice(0, 5).every((pk) => pk.op === 'OACK')).toBe(true);
        expect(after[5]).toMatchObject({ op: 'ERROR', code: 0, message: expect.stringMatching(/5 retries/) });
      }
      await waitFor(() => h.server.stats().active === 0, 10_000, 'the silent transfers to be given up');
      expect(h.server.stats().errors).toBe(192 + 8);

      // The host's slots are free again.
      await hogs[0]!.send(encodeRequest('RRQ', 'undionly.kpxe'), h.port);
      expect((await hogs[0]!.next()).packet).toMatchObject({ op: 'DATA', block: 1 });
    } finally {
      await Promise.all(hogs.map((p) => p.close()));
      await h.close();
    }
  });

  it('a restart from the same port does not count against its own host', async () => {
    const h = await startHarness({ maxTransfersPerHost: 1, timeoutMs: 5000 });
    const [p, q] = await Promise.all([RawPeer.open(), RawPeer.open()]);
    try {
      await p.send(encodeRequest('RRQ', 'undionly.kpxe'), h.port);
      const d1 = await p.next();
      expect(d1.packet).toMatchObject({ op: 'DATA', block: 1 });
      await q.send(encodeRequest('RRQ', 'undionly.kpxe'), h.port);
      expect((await q.next()).packet).toMatchObject({ op: 'ERROR', code: 0, message: expect.stringMatching(/too many transfers from/) });
      await p.send(encodeRequest('RRQ', 'random20.bin'), h.port); // another file from the same port: a restart
      const restarted = await p.next();
      expect(restarted.packet).toMatchObject({ op: 'DATA', block: 1 });
      expect(restarted.from.port).not.toBe(d1.from.port);
    } finally {
      await Promise.all([p.close(), q.close()]);
      await h.close();
    }
  });
});

// ---- protocol corner cases, with a raw peer ----

const SMALL = Buffer.from(Array.from({ length: 3000 }, (_, i) => i % 251)); // 6 blocks of 512 (the last 440)
const EXACT = Buffer.alloc(1024, 7); // two full blocks, then an empty one

// Each test gets its own server, so a failure leaves nothing behind for the next one. Without a negotiated
// timeout the server's wait adapts down to 50 ms, so on a loaded machine a block may legitimately arrive
// twice; tests that count packets negotiate a fixed timeout (RFC 2349) instead.
describe('protocol', () => {
  let h: Harness;
  beforeEach(async () => {
    const generated = memorySource({ 'small.bin': SMALL, 'exact.bin': EXACT, 'empty.bin': Buffer.alloc(0) });
    h = await startHarness({ timeoutMs: 5000 }, combinedSource(generated, directorySource(root)));
  });
  afterEach(() => h.close());

  async function withPeer<T>(fn: (p: RawPeer) => Promise<T>): Promise<T> {
    const peer = await RawPeer.open();
    try {
      return await fn(peer);
    } finally {
      await peer.close();
    }
  }

  /** Receive DATA packets like a client: ACK each window (and any repeat), until the short last block. */
  async function receive(p: RawPeer, first: Received, blksize: number, windowsize: number) {
    const tid = first.from.port;
    const blocks = new Map<number, Buffer>();
    const seen = new Map<number, number>();
    let next: Received | undefined = first;
    for (;;) {
      const r: Received = next ?? (await p.next());
      next = undefined;
      expect(r.from.port).toBe(tid);
      if (r.packet.op !== 'DATA') throw new Error(`unexpected ${r.packet.op}`);
      const { block, data } = r.packet;
      seen.set(block, (seen.get(block) ?? 0) + 1);
      blocks.set(block, data);
      if (data.length < blksize) {
        await p.send(encodeAck(block), tid);
        break;
      }
      if (block % windowsize === 0 || (seen.get(block) ?? 0) > 1) await p.send(encodeAck(block), tid);
    }
    const ordered = [...blocks.keys()].sort((x, y) => x - y).map((k) => blocks.get(k)!);
    return { bytes: Buffer.concat(ordered), seen };
  }

  it('without options: DATA 1 straight away, lock-step to a short last block', () =>
    withPeer(async (p) => {
      await p.send(encodeRequest('RRQ', 'small.bin'), h.port);
      const first = await p.next();
      expect(first.from.port).not.toBe(h.port); // RFC 1350 §4: a new TID
      const got = await receive(p, first, 512, 1);
      expect(got.bytes.equals(SMALL)).toBe(true);
      expect([...got.seen.keys()].sort()).toEqual([1, 2, 3, 4, 5, 6]);
    }));

  it('ends a file whose size is a multiple of blksize with an empty block, and sends an empty file as one', () =>
    withPeer(async (p) => {
      await p.send(encodeRequest('RRQ', 'exact.bin'), h.port);
      const got = await receive(p, await p.next(), 512, 1);
      expect(got.bytes.equals(EXACT)).toBe(true);
      expect(got.seen.has(3)).toBe(true); // block 3 is the empty one
    }).then(() => withPeer(async (p) => {
      await p.send(encodeRequest('RRQ', 'empty.bin', 'octet', [{ name: 'tsize', value: '0' }]), h.port);
      const oack = await p.next();
      expect(oack.packet).toEqual({ op: 'OACK', options: [{ name: 'tsize', value: '0' }] });
      await p.send(encodeAck(0), oack.from.port);
      expect((await p.next()).packet).toEqual({ op: 'DATA', block: 1, data: Buffer.alloc(0) });
      await p.send(encodeAck(1), oack.from.port);
      await waitFor(() => h.server.stats().active === 0, 5000, 'the transfer to complete');
    })));

  it('answers options with an OACK carrying the real tsize, then waits for ACK 0 (RFC 2347, 2349)', () =>
    withPeer(async (p) => {
      await p.send(encodeRequest('RRQ', 'small.bin', 'octet', [{ name: 'tsize', value: '0' }, { name: 'blksize', value: '1000' }, { name: 'foo', value: 'bar' }]), h.port);
      const oack = await p.next();
      expect(oack.packet).toEqual({ op: 'OACK', options: [{ name: 'tsize', value: '3000' }, { name: 'blksize', value: '1000' }] });
      await p.send(encodeAck(0), oack.from.port);
      const got = await receive(p, await p.next(), 1000, 1);
      expect(got.bytes.equals(SMALL)).toBe(true);
    }));

  it('ignores duplicate ACKs: no Sorcerer’s Apprentice (RFC 1123 §4.2.3.1)', () =>
    withPeer(async (p) => {
      // A negotiated timeout is fixed (RFC 2349), so no retransmission can blur the count.
      await p.send(encodeRequest('RRQ', 'small.bin', 'octet', [{ name: 'timeout', value: '5' }]), h.port);
      const oack = await p.next();
      const tid = oack.from.port;
      await p.send(encodeAck(0), tid);
      await p.send(encodeAck(0), tid); // duplicate ACK of the OACK
      const d1 = await p.next();
      expect(d1.packet).toMatchObject({ op: 'DATA', block: 1 });
      for (let i = 0; i < 3; i++) await p.send(encodeAck(1), tid); // three ACKs of block 1
      const got = await receive(p, await p.next(), 512, 1);
      // UDP on loopback keeps order: a duplicate DATA would have arrived before the later blocks.
      expect(Object.fromEntries(got.seen)).toEqual({ 2: 1, 3: 1, 4: 1, 5: 1, 6: 1 });
      expect(p.queued).toBe(0);
    }));

  it('windowsize: sends a window, and after an ACK inside it restarts from the next block (RFC 7440 §4)', () =>
    withPeer(async (p) => {
      await p.send(encodeRequest('RRQ', 'small.bin', 'octet', [{ name: 'windowsize', value: '4' }, { name: 'timeout', value: '5' }]), h.port);
      const oack = await p.next();
      const tid = oack.from.port;
      expect(oack.packet).toEqual({ op: 'OACK', options: [{ name: 'windowsize', value: '4' }, { name: 'timeout', value: '5' }] });
      await p.send(encodeAck(0), tid);
      const window1 = [await p.next(), await p.next(), await p.next(), await p.next()].map((r) => r.packet);
      expect(window1.map((d) => d.op === 'DATA' && d.block)).toEqual([1, 2, 3, 4]);
      await p.send(encodeAck(2), tid); // "block 3 was lost"
      const window2 = [await p.next(), await p.next(), await p.next(), await p.next()].map((r) => r.packet);
      expect(window2.map((d) => d.op === 'DATA' && d.block)).toEqual([3, 4, 5, 6]);
      await p.send(encodeAck(2), tid); // stale duplicate: ignored
      await p.send(encodeAck(6), tid);
      await waitFor(() => h.server.stats().active === 0, 5000, 'the transfer to complete');
      expect(p.queued).toBe(0);
      const last = window2[3]!;
      expect(last.op === 'DATA' && last.data.equals(SMALL.subarray(2560))).toBe(true);
    }));

  it('ignores a packet from a foreign TID and carries on (RFC 1350 §4; the transfer socket is connected, as tftpd-hpa\'s)', () =>
    withPeer(async (p) => {
      const stranger = await RawPeer.open();
      try {
        await p.send(encodeRequest('RRQ', 'small.bin'), h.port);
        const d1 = await p.next();
        // A stranger acknowledges the block on the client's behalf: it moves nothing and gets no answer.
        await stranger.send(encodeAck(1), d1.from.port);
        await stranger.send(encodeAck(2), d1.from.port);
        await new Promise((r) => setTimeout(r, 300));
        expect(stranger.queued).toBe(0);
        expect(p.queued).toBe(0); // block 2 was not sent on the stranger's ACK
        const got = await receive(p, d1, 512, 1);
        expect(got.bytes.equals(SMALL)).toBe(true);
      } finally {
        await stranger.close();
      }
    }));

  it('ends a transfer with error 4 when its client sends something that has no place in it', () =>
    withPeer(async (p) => {
      await p.send(encodeRequest('RRQ', 'small.bin'), h.port);
      const d1 = await p.next();
      await p.send(encodeRequest('WRQ', 'small.bin'), d1.from.port);
      expect((await p.next()).packet).toMatchObject({ op: 'ERROR', code: 4 });
      await waitFor(() => h.server.stats().active === 0, 5000, 'the transfer to end');
    }));

  it('ends quietly when a client answers the OACK with error 8 (a PXE ROM asking only the size)', () =>
    withPeer(async (p) => {
      const before = h.server.stats();
      const logged = h.entries.length;
      await p.send(encodeRequest('RRQ', 'undionly.kpxe', 'octet', [{ name: 'tsize', value: '0' }]), h.port);
      const oack = await p.next();
      expect(oack.packet).toEqual({ op: 'OACK', options: [{ name: 'tsize', value: String(content['undionly.kpxe']!.length) }] });
      await p.send(encodeError(8, 'tsize only'), oack.from.port);
      await waitFor(() => h.server.stats().active === 0, 5000, 'the transfer to end');
      expect(h.server.stats()).toMatchObject({ errors: before.errors, transfers: before.transfers + 1 });
      const entries = h.entries.slice(logged);
      expect(entries.some((e) => e.level === 'debug' && /refused the OACK/.test(e.msg))).toBe(true);
      expect(entries.filter((e) => e.level === 'warn' || e.level === 'error')).toEqual([]);
    }));

  it('refuses writes, other modes, malformed requests, missing files and traversal with the right codes', () =>
    withPeer(async (p) => {
      const ask = async (msg: Buffer) => {
        await p.send(msg, h.port);
        return (await p.next()).packet;
      };
      expect(await ask(encodeRequest('WRQ', 'small.bin'))).toMatchObject({ op: 'ERROR', code: 2 });
      expect(await ask(encodeRequest('RRQ', 'small.bin', 'netascii'))).toMatchObject({ op: 'ERROR', code: 4 });
      expect(await ask(Buffer.from([0, 1, 0x61, 0x62]))).toMatchObject({ op: 'ERROR', code: 4 });
      expect(await ask(encodeRequest('RRQ', 'nosuch.bin'))).toMatchObject({ op: 'ERROR', code: 1 });
      for (const name of ['../etc/passwd', '/etc/passwd', 'a\\b']) {
        expect(await ask(encodeRequest('RRQ', name))).toMatchObject({ op: 'ERROR', code: 2 });
      }
    }));

  it('treats a repeated request as a retransmission until data is acknowledged, then as a restart', () =>
    withPeer(async (p) => {
      const before = h.server.stats().transfers;
      const rrq = encodeRequest('RRQ', 'small.bin', 'octet', [{ name: 'timeout', value: '5' }]);
      await p.send(rrq, h.port);
      await p.send(rrq, h.port);
      const oack = await p.next();
      expect(oack.packet.op).toBe('OACK');
      await p.send(encodeAck(0), oack.from.port);
      expect((await p.next()).packet).toMatchObject({ op: 'DATA', block: 1 });
      expect(p.queued).toBe(0);
      await p.send(encodeAck(1), oack.from.port);
      expect((await p.next()).packet).toMatchObject({ op: 'DATA', block: 2 });
      await waitFor(() => h.server.stats().transfers === before + 1, 1000, 'one transfer');

      await p.send(rrq, h.port); // the client restarted from the same port
      const restarted = await p.next();
      expect(restarted.packet.op).toBe('OACK');
      expect(restarted.from.port).not.toBe(oack.from.port);
      await p.send(encodeAck(0), restarted.from.port);
      const got = await receive(p, await p.next(), 512, 1);
      expect(got.bytes.equals(SMALL)).toBe(true);
      await waitFor(() => h.server.stats().active === 0, 5000, 'both transfers to end');
      expect(h.server.stats().transfers).toBe(before + 2);
    }));
});

describe('timeouts and shutdown', () => {
  it('retransmits on timeout, gives up after the retry limit with an error, and closes the file', async () => {
    const h = await startHarness({ timeoutMs: 100, retries: 2 });
    const p = await RawPeer.open();
    try {
      await p.send(encodeRequest('RRQ', 'undionly.kpxe'), h.port);
      const copies = [await p.next(), await p.next(), await p.next()].map((r) => r.packet);
      expect(copies.every((d) => d.op === 'DATA' && d.block === 1)).toBe(true);
      expect((await p.next()).packet).toMatchObject({ op: 'ERROR', code: 0, message: expect.stringMatching(/2 retries/) });
      await waitFor(() => h.server.stats().active === 0, 5000, 'the transfer to end');
      expect(h.counts).toEqual({ opened: 1, closed: 1 });
      expect(h.server.stats().errors).toBe(1);
    } finally {
      await p.close();
      await h.close();
    }
  });

  it('a client that leaves without its final ACK (lost, or never sent) ends the transfer as unconfirmed, not an error', async () => {
    const h = await startHarness({ timeoutMs: 100, retries: 2 }, memorySource({ 'small.bin': SMALL }));
    // Take blocks 1-5 in lock-step, receive block 6 (the last), then say nothing: `close` also shuts the port,
    // so a retransmission of block 6 meets ECONNREFUSED; without it, the retries run out.
    async function takeAllButTheFinalAck(p: RawPeer): Promise<void> {
      await p.send(encodeRequest('RRQ', 'small.bin'), h.port);
      for (let block = 1; ; block++) {
        const r = await p.next();
        expect(r.packet).toMatchObject({ op: 'DATA', block });
        if (block === 6) return;
        await p.send(encodeAck(block), r.from.port);
      }
    }
    const silent = await RawPeer.open();
    const gone = await RawPeer.open();
    try {
      await takeAllButTheFinalAck(silent);
      await takeAllButTheFinalAck(gone);
      await gone.close();
      await waitFor(() => h.server.stats().active === 0, 5000, 'both transfers to end');
      expect(h.server.stats()).toMatchObject({ transfers: 2, errors: 0, unconfirmed: 2, bytes: 2 * 5 * 512 });
      // The silent client got its last block again, and never an ERROR: nothing went wrong on its side.
      const after: string[] = [];
      for (;;) {
        const r = await silent.next(200).catch(() => undefined);
        if (!r) break;
        after.push(r.packet.op === 'DATA' ? `DATA ${r.packet.block}` : r.packet.op);
      }
      expect(after.length).toBeGreaterThan(0);
      expect(new Set(after)).toEqual(new Set(['DATA 6']));
      expect(h.counts).toEqual({ opened: 2, closed: 2 });
    } finally {
      await silent.close();
      await h.close();
    }
  });

  it('declines a 255 s client timeout (RFC 2349): the server waits its own time and gives up after its retries', async () => {
    const h = await startHarness({ timeoutMs: 100, retries: 2 });
    const p = await RawPeer.open();
    try {
      // The only option is declined, so there is no OACK: DATA 1 straight away (RFC 2347).
      await p.send(encodeRequest('RRQ', 'undionly.kpxe', 'octet', [{ name: 'timeout', value: '255' }]), h.port);
      const copies = [await p.next(), await p.next(), await p.next()].map((r) => r.packet);
      expect(copies.every((d) => d.op === 'DATA' && d.block === 1)).toBe(true);
      expect((await p.next()).packet).toMatchObject({ op: 'ERROR', code: 0, message: expect.stringMatching(/2 retries/) });
      await waitFor(() => h.server.stats().active === 0, 5000, 'the transfer to be given up');
      expect(h.negotiated('undionly.kpxe')).not.toHaveProperty('timeoutMs');
    } finally {
      await p.close();
      await h.close();
    }
  });

  it('close() ends running transfers, tells their clients, and closes every file', async () => {
    const h = await startHarness({ timeoutMs: 30_000 });
    const p = await RawPeer.open();
    try {
      await p.send(encodeRequest('RRQ', 'random20.bin'), h.port);
      expect((await p.next()).packet).toMatchObject({ op: 'DATA', block: 1 });
      await h.close(); // asserts closed === opened and active === 0
      expect((await p.next()).packet).toMatchObject({ op: 'ERROR', code: 0, message: 'server shutting down' });
      expect(h.counts).toEqual({ opened: 1, closed: 1 });
    } finally {
      await p.close();
    }
  });

  it('rejects invalid limits and a port in use when starting', async () => {
    const source = memorySource({});
    await expect(startTftpServer({ host: '127.0.0.1', port: 0, source, maxBlksize: 4 })).rejects.toThrow(/maxBlksize/);
    await expect(startTftpServer({ host: '127.0.0.1', port: 0, source, maxTransfers: 0 })).rejects.toThrow(/maxTransfers/);
    await expect(startTftpServer({ host: '127.0.0.1', port: 0, source, maxTransfersPerHost: 0 })).rejects.toThrow(/maxTransfersPerHost/);
    const first = await startTftpServer({ host: '127.0.0.1', port: 0, source });
    try {
      await expect(startTftpServer({ host: '127.0.0.1', port: first.address().port, source })).rejects.toMatchObject({ code: 'EADDRINUSE' });
    } finally {
      await first.close();
    }
  });
});
