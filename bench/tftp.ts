// bench/tftp: 20 MB over TFTP on loopback with atftp, Dragonfly's server next to tftpd-hpa's in.tftpd
// measured in the same run (medians; the runs alternate so both see the same machine load). The client
// command is the same for both: blksize 1468 + windowsize 16. in.tftpd has no windowsize (RFC 7440) and
// leaves it out of its OACK, so against it atftp runs lock-step. Then 200 concurrent curl clients fetch
// undionly.kpxe from each server; every copy must be byte-identical. Targets (issue #12): ≥ 1.0× in.tftpd's
// throughput windowed, lock-step (what iPXE and firmware PXE clients do) and with 200 concurrent clients.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runProcess } from '../boot/tftp/test-client.js';
import { lineReader, median, round } from './measure.js';

const UNDIONLY = '/usr/lib/ipxe/undionly.kpxe';

export async function benchTftp(opts: { runs?: number; sizeMb?: number; clients?: number } = {}) {
  const runs = opts.runs ?? 5;
  const size = (opts.sizeMb ?? 20) * 1024 * 1024;
  const clients = opts.clients ?? 200;
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-bench-tftp-'));
  fs.chmodSync(work, 0o755); // in.tftpd drops to "nobody" before reading
  const root = path.join(work, 'root');
  const out = path.join(work, 'out');
  fs.mkdirSync(root, { mode: 0o755 });
  fs.mkdirSync(out);
  const big = randomBytes(size);
  const undionly = fs.readFileSync(UNDIONLY);
  fs.writeFileSync(path.join(root, 'big.bin'), big, { mode: 0o644 });
  fs.writeFileSync(path.join(root, 'undionly.kpxe'), undionly, { mode: 0o644 });

  // Our server in its own process, as in.tftpd is (bench/tftp-child.ts).
  const ours = spawn(process.execPath, [path.join(path.dirname(fileURLToPath(import.meta.url)), 'tftp-child.js'), root], { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = lineReader(ours.stdout!);
  const ourPort = Number(await lines.next());
  const theirPort = await freeUdpPort();
  const tftpd = spawn('in.tftpd', ['--foreground', '--listen', '--address', `127.0.0.1:${theirPort}`, '--secure', root], { stdio: 'ignore' });
  try {
    await waitUntilServing(theirPort, path.join(out, 'probe'));

    // 20 MB, alternating servers; every copy is checked.
    const fetchBig = async (port: number, options: string[]) => {
      const dest = path.join(out, `big-${port}`);
      fs.rmSync(dest, { force: true });
      const t0 = performance.now();
      const r = await runProcess('atftp', ['--get', '-r', 'big.bin', '-l', dest, ...options.flatMap((o) => ['--option', o]), '127.0.0.1', String(port)]);
      const ms = performance.now() - t0;
      if (r.code !== 0 || !fs.readFileSync(dest).equals(big)) throw new Error(`atftp from port ${port} failed (${r.code}): ${r.stderr.slice(0, 500)}`);
      return ms;
    };
    const windowed = ['blksize 1468', 'windowsize 16'];
    const oursMs: number[] = [];
    const theirsMs: number[] = [];
    const oursLockstepMs: number[] = [];
    process.stderr.write(`bench/tftp: ${runs} runs of ${size / 1024 / 1024} MB per server…\n`);
    for (let i = 0; i < runs; i++) {
      oursMs.push(await fetchBig(ourPort, windowed));
      theirsMs.push(await fetchBig(theirPort, windowed));
      oursLockstepMs.push(await fetchBig(ourPort, ['blksize 1468']));
    }

    // Concurrent clients, each server in turn.
    const concurrent = async (port: number) => {
      const dests = Array.from({ length: clients }, (_, i) => path.join(out, `c-${port}-${i}`));
      const t0 = performance.now();
      const results = await Promise.all(
        dests.map((dest) => runProcess('curl', ['-sS', '--tftp-blksize', '1468', '-o', dest, `tftp://127.0.0.1:${port}/undionly.kpxe`])),
      );
      const ms = performance.now() - t0;
      const identical = dests.filter((d, i) => results[i]!.code === 0 && fs.existsSync(d) && fs.readFileSync(d).equals(undionly)).length;
      return { ms, identical };
    };
    const oursConcurrent = await concurrent(ourPort);
    const theirsConcurrent = await concurrent(theirPort);

    const mbps = (ms: number) => size / 1024 / 1024 / (ms / 1000);
    const figures = {
      bench: 'tftp',
      sizeMb: size / 1024 / 1024,
      runs,
      oursWindowedMs: round(median(oursMs)),
      inTftpdMs: round(median(theirsMs)),
      oursLockstepMs: round(median(oursLockstepMs)),
      oursMBps: round(mbps(median(oursMs))),
      inTftpdMBps: round(mbps(median(theirsMs))),
      oursLockstepMBps: round(mbps(median(oursLockstepMs))),
      throughputRatio: round(median(theirsMs) / median(oursMs), 2),
      lockstepRatio: round(median(theirsMs) / median(oursLockstepMs), 2),
      concurrentClients: clients,
      oursConcurrentMs: round(oursConcurrent.ms),
      oursConcurrentIdentical: oursConcurrent.identical,
      inTftpdConcurrentMs: round(theirsConcurrent.ms),
      inTftpdConcurrentIdentical: theirsConcurrent.identical,
      concurrentRatio: round(theirsConcurrent.ms / oursConcurrent.ms, 2),
      serverStats: await (async () => {
        ours.kill('SIGUSR2');
        return JSON.parse(await lines.next()) as unknown;
      })(),
      targets: { throughputRatio: 1.0, lockstepRatio: 1.0, concurrentRatio: 1.0, concurrentIdentical: clients },
      met: {
        throughput: median(theirsMs) / median(oursMs) >= 1.0,
        lockstep: median(theirsMs) / median(oursLockstepMs) >= 1.0,
        concurrent: oursConcurrent.identical === clients && theirsConcurrent.ms / oursConcurrent.ms >= 1.0,
      },
    };
    console.log(`20 MB, atftp blksize 1468 + windowsize 16:`);
    console.log(`  dragonfly (window 16):  ${figures.oursWindowedMs} ms  ${figures.oursMBps} MB/s`);
    console.log(`  in.tftpd  (lock-step):  ${figures.inTftpdMs} ms  ${figures.inTftpdMBps} MB/s`);
    console.log(`  ratio: ${figures.throughputRatio}× in.tftpd (target ≥ 1.0×)`);
    console.log(`  dragonfly lock-step (blksize 1468, no window): ${figures.oursLockstepMs} ms, ${figures.lockstepRatio}× in.tftpd (target ≥ 1.0×)`);
    console.log(`${clients} concurrent curl clients, undionly.kpxe:`);
    console.log(`  dragonfly: ${figures.oursConcurrentMs} ms, ${figures.oursConcurrentIdentical}/${clients} byte-identical`);
    console.log(`  in.tftpd:  ${figures.inTftpdConcurrentMs} ms, ${figures.inTftpdConcurrentIdentical}/${clients} byte-identical`);
    console.log(`  ratio: ${figures.concurrentRatio}× in.tftpd (target ≥ 1.0×)`);
    console.log(JSON.stringify(figures));
    return figures;
  } finally {
    tftpd.kill();
    ours.kill('SIGTERM');
    await new Promise((r) => ours.once('exit', r));
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** A UDP port that was free a moment ago (in.tftpd cannot be asked to pick one). */
async function freeUdpPort(): Promise<number> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', resolve));
  const { port } = socket.address();
  await new Promise<void>((resolve) => socket.close(resolve));
  return port;
}

/** Poll with a real fetch until the freshly started in.tftpd answers. */
async function waitUntilServing(port: number, dest: string): Promise<void> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const r = await runProcess('atftp', ['--get', '-r', 'undionly.kpxe', '-l', dest, '127.0.0.1', String(port)], 5000);
    if (r.code === 0) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`in.tftpd does not answer on 127.0.0.1:${port}`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  await benchTftp({ runs: Number(process.env.BENCH_RUNS ?? 5) });
  process.exit(0);
}
