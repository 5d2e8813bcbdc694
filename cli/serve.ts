// `dragonfly serve`: the thing machines PXE boot from. HTTP (iPXE scripts, Mage files, agent API),
// our TFTP server, and (opt-in) proxyDHCP, in one process over one state store.
import { rateLimit } from '../p2p/rate.js';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createLogger, logFormat } from './log.js';
import { DragonflyError } from '../schemas/errors.js';
import { buildServer } from '../boot/server.js';
import { entryScript } from '../boot/ipxe.js';
import { loadOrCreateSecret } from '../boot/tokens.js';
import { startTftpServer } from '../boot/tftp/server.js';
import { combinedSource, directorySource, memorySource } from '../boot/tftp/source.js';
import { startProxyDhcp } from '../boot/dhcp/server.js';
import { LmdbStore, stateDirFrom } from '../store/lmdb.js';
import { Controller } from '../reconciler/controller.js';
import { sanitizeUrl } from '../reconciler/sources/credentials.js';
import { GitSource, gitCacheDir } from '../reconciler/sources/git-source.js';
import { followDirectory, followGit, type Follower } from '../reconciler/sources/follow.js';
import { FORMATS, parseDuration, parseSize } from '../schemas/formats.js';
import { Seed } from '../p2p/seed.js';
import { errorBody } from '../boot/http-errors.js';
import { ensureMageImage } from '../mage/build/reuse.js';
import type { Io } from './output.js';
import { progressBar } from './progress.js';
import { tokenFrom } from './token-file.js';

export const serveHelp = `Usage: dragonfly serve [--fleet DIR | --repo URL [--branch B] [--path SUBDIR] [--poll 30s]] [--manual]
                       [--state DIR] [--http HOST:PORT] [--tftp HOST:PORT|off]
                       [--dhcp proxy --dhcp-ip IP [--chainload-ipxe]] [--public-url URL] [--ipxe-dir DIR]
                       [--mage-dir DIR | --no-mage-build]
                       [--api-token-file FILE] [--read-token-file FILE] [--max-… N] [--log-format json|pretty]

Serve PXE-booting machines: each machine's fate (discover, image, boot its disk) comes from what the
state store says about its MAC. With --fleet or --repo it is also the GitOps controller: every new
revision (a directory save, a pushed commit) is validated, planned and applied; an invalid revision
changes nothing and is reported (\`dragonfly status\`) until a valid one arrives.

  --fleet DIR          the fleet directory, watched: each save is reconciled (revision = content hash)
  --repo URL           the fleet repository (http/https), followed: each commit is reconciled
  --branch B           the branch to follow (default main)
  --path SUBDIR        the fleet's folder inside the repository (default: its root)
  --poll DURATION      how often to fetch (default 30s); webhooks fetch at once
  --git-credentials-file FILE   first line user:password or a token (else DRAGONFLY_GIT_USERNAME /
                       DRAGONFLY_GIT_PASSWORD / DRAGONFLY_GIT_TOKEN); never logged
  --manual             detect and report changes only; apply them with \`dragonfly apply\`
  --webhook-secret-file FILE    the shared secret of POST /api/v1/webhooks/github|gitlab|gitea
                       (else DRAGONFLY_WEBHOOK_SECRET); without one, webhooks are refused
  --state DIR          the state directory (default $DRAGONFLY_STATE or ./.dragonfly)
  --http HOST:PORT     HTTP: iPXE scripts, Mage files, agent and read API (default 0.0.0.0:8080)
  --tftp HOST:PORT     TFTP: iPXE binaries and boot.ipxe / autoexec.ipxe (default 0.0.0.0:69; off: none)
  --dhcp proxy         answer PXE clients next to your DHCP server (UDP 67 and 4011), never leasing
  --dhcp-ip IP         the address of this server on the PXE network (required with --dhcp proxy)
  --chainload-ipxe     with --dhcp proxy: NIC ROMs that already are iPXE get our iPXE binary over TFTP
                       first (old or feature-poor vendor builds), then the script; default: the script
  --public-url URL     how machines reach the HTTP server (default http://FIRST-IPV4:PORT)
  --ipxe-dir DIR       iPXE binaries (default /usr/lib/ipxe, Debian's ipxe package)
  --mage-dir DIR       serve Mage's vmlinuz and initrd from DIR (dragonfly mage build --out DIR)
  --no-mage-build      without --mage-dir, serve builds Mage once into STATE/mage in the background
                       (Debian packages, ~20 s; /mage/ answers 503 with Retry-After meanwhile, which iPXE
                       waits out) and reuses it while dragonfly, the kernel package and node stay the same;
                       --no-mage-build serves no Mage: discovery scripts then fail to boot

  --api-token-file FILE        the admin token (else DRAGONFLY_API_TOKEN): admin calls and reads
  --read-token-file FILE       a read-only token (else DRAGONFLY_READ_TOKEN): machines, workflows,
                       events, metrics. Without either, the read API is refused: inventories and MACs are
                       not public. PXE and Mage need no token.
  --max-discovered N           Discovered machines (seen, not in git) the store may hold (default 10000);
                       new MACs are also limited to 60 a minute per source address
  --max-events N               events the store keeps (default 100000); the oldest are trimmed every minute
  --p2p-cache-size SIZE        disk the P2P seed may use for image pieces, in STATE/p2p (default 8GiB;
                               least recently used pieces are evicted and read again from the origin)
  --p2p-upload-limit RATE      the seed's piece uploads at most this fast, all peers together, e.g. 1Gbit/s
                               (default unlimited): the machines then take more from each other
  --max-streams N              event streams open at once (default 4096); --max-streams-per-address N (64)
  --max-connections N          HTTP connections at once (default 4096); --max-connections-per-address N (256)

Security: anyone on the provisioning network can name any MAC; docs/security.md says what each endpoint
lets them do and what to put around the server. \`dragonfly suspend\` / \`resume\` pause and restart
applying. Logs go to stdout: readable lines on a terminal, JSON lines (pino) when piped;
--log-format json|pretty chooses. DRAGONFLY_LOG_LEVEL (default info).
`;

export interface ServeOptions {
  fleet?: string;
  repo?: string;
  branch?: string;
  path?: string;
  poll?: string;
  gitCredentialsFile?: string;
  manual?: boolean;
  webhookSecretFile?: string;
  state?: string;
  http?: string;
  tftp?: string;
  dhcp?: string;
  dhcpIp?: string;
  chainloadIpxe?: boolean;
  publicUrl?: string;
  ipxeDir?: string;
  mageDir?: string;
  noMageBuild?: boolean;
  apiTokenFile?: string;
  readTokenFile?: string;
  maxStreams?: string;
  maxStreamsPerAddress?: string;
  maxConnections?: string;
  maxConnectionsPerAddress?: string;
  maxDiscovered?: string;
  maxEvents?: string;
  p2pCacheSize?: string;
  p2pUploadLimit?: string;
  logFormat?: string;
}

function count(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  if (!/^\d{1,7}$/.test(text) || Number(text) < 1) throw new DragonflyError('DF_ERR_SERVE_CONFIG', `${flag} takes a whole number of at least 1, not ${JSON.stringify(text)}`);
  return Number(text);
}

/** A size such as 8GiB or 500MB (schemas/formats.ts), at least 64 MiB: a cache must hold a few pieces. */
function sizeOption(text: string, flag: string): number {
  const bytes = FORMATS.size!.validate(text) ? parseSize(text) : Number.NaN;
  if (!(bytes >= 64 * 2 ** 20)) throw new DragonflyError('DF_ERR_SERVE_CONFIG', `${flag} takes a size of at least 64MiB, such as 8GiB or 500GB, not ${JSON.stringify(text)}`);
  return bytes;
}

/** A token from a file (first line) or the environment; an empty one counts as none. */
function configuredToken(file: string | undefined, env: string | undefined, flag: string): string | undefined {
  const token = tokenFrom(file, env);
  if (file && !token) throw new DragonflyError('DF_ERR_SERVE_CONFIG', `${flag} ${file} is empty`);
  return token;
}

function hostPort(text: string, what: string): { host: string; port: number } {
  const m = /^(.*):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new DragonflyError('DF_ERR_SERVE_CONFIG', `${what} ${JSON.stringify(text)} is not HOST:PORT`);
  return { host: m[1]!.replace(/^\[|\]$/g, '') || '0.0.0.0', port };
}

function durationMs(text: string): number {
  try {
    return parseDuration(text) * 1000;
  } catch {
    throw new DragonflyError('DF_ERR_SERVE_CONFIG', `--poll ${JSON.stringify(text)} is not a duration such as 30s or 5m`);
  }
}

function firstIpv4(): string {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}

/** Seconds a machine's iPXE waits before asking again for /mage/ files while Mage is being built. */
export const MAGE_RETRY_AFTER_S = 5;

type Logger = ReturnType<typeof createLogger>;

/**
 * Mage in STATE/mage, built in the background (or reused) while the server answers PXE. Until it is ready
 * /mage/ answers 503: with Retry-After while building, without once the build failed (iPXE's script then
 * falls back to re-chaining /boot.ipxe every 10 s).
 */
class MageInStateDir {
  state: 'building' | 'ready' | 'failed' = 'building';
  private readonly abort = new AbortController();
  private done: Promise<void> = Promise.resolve();

  constructor(
    private readonly dir: string,
    private readonly log: Logger,
  ) {}

  start(): void {
    const t0 = Date.now();
    // On a terminal a progress bar on stderr, the steps at debug level; otherwise one log line per step.
    const bar = progressBar('Mage build', 0);
    const onTerminal = process.stderr.isTTY === true && !process.env.CI;
    const stepLog = (msg: string) => (onTerminal ? this.log.debug(msg) : this.log.info(msg));
    this.done = ensureMageImage({
      dir: this.dir,
      signal: this.abort.signal,
      onBuild: (why) =>
        this.log.info(
          { dir: this.dir, why },
          `building Mage into ${this.dir} (${why}): kernel, busybox, tools and libraries from Debian packages; /mage/vmlinuz and /mage/initrd answer 503 with Retry-After ${MAGE_RETRY_AFTER_S} until it is done`,
        ),
      progress: (step, total, label) => {
        bar.update(step, total);
        if (step < total) stepLog(`Mage build step ${step + 1}/${total}: ${label}`);
      },
      log: (line) => stepLog(`Mage build: ${line}`),
    }).then(
      (r) => {
        bar.stop();
        this.state = 'ready';
        const m = r.manifest;
        const what = { dir: this.dir, kernel: `${m.kernel.package} ${m.kernel.version}`, vmlinuzBytes: m.vmlinuz.bytes, initrdBytes: m.initrd.bytes, initrdSha256: m.initrd.sha256 };
        if (r.reused) this.log.info(what, `Mage in ${this.dir} matches this build's inputs: reusing it, no rebuild; serving /mage/vmlinuz and /mage/initrd`);
        else this.log.info({ ...what, seconds: Number(((Date.now() - t0) / 1000).toFixed(1)) }, `Mage built in ${((Date.now() - t0) / 1000).toFixed(1)} s; serving /mage/vmlinuz and /mage/initrd`);
      },
      (e: unknown) => {
        bar.stop();
        this.state = 'failed';
        if (this.abort.signal.aborted) return;
        const err = e as DragonflyError;
        this.log.error(
          { code: err.code ?? 'DF_ERR_MAGE_BUILD', hint: err.hint, err: err.message },
          `Mage build failed: ${err.message}. Serving goes on, but discovery and imaging scripts point at /mage/vmlinuz and /mage/initrd, which answer 503 until serve is restarted after the fix (${err.hint ?? 'see docs/mage-image.md'}) or given --mage-dir DIR`,
        );
      },
    );
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.done;
  }
}

export async function serveCommand(opts: ServeOptions, _io: Io): Promise<number> {
  const log = createLogger({ level: process.env.DRAGONFLY_LOG_LEVEL ?? 'info', fd: 1, format: logFormat(opts.logFormat) });
  const http = hostPort(opts.http ?? '0.0.0.0:8080', '--http');
  const tftp = opts.tftp === 'off' ? undefined : hostPort(opts.tftp ?? '0.0.0.0:69', '--tftp');
  if (opts.dhcp !== undefined && opts.dhcp !== 'proxy') throw new DragonflyError('DF_ERR_SERVE_CONFIG', `--dhcp ${opts.dhcp}: only "proxy" is supported`);
  if (opts.chainloadIpxe && opts.dhcp !== 'proxy') throw new DragonflyError('DF_ERR_SERVE_CONFIG', '--chainload-ipxe changes what the proxyDHCP answers: it needs --dhcp proxy');
  if (opts.chainloadIpxe && opts.tftp === 'off') throw new DragonflyError('DF_ERR_SERVE_CONFIG', '--chainload-ipxe hands out the iPXE binary over TFTP: it cannot go with --tftp off');
  if (opts.dhcp && !opts.dhcpIp) throw new DragonflyError('DF_ERR_SERVE_CONFIG', '--dhcp proxy needs --dhcp-ip, the address machines reach this server at');
  if (opts.mageDir && opts.noMageBuild) throw new DragonflyError('DF_ERR_SERVE_CONFIG', '--mage-dir serves the Mage in DIR and --no-mage-build serves none: give one of them');
  const ipxeDir = opts.ipxeDir ?? '/usr/lib/ipxe';
  const apiToken = configuredToken(opts.apiTokenFile, process.env.DRAGONFLY_API_TOKEN, '--api-token-file');
  const readToken = configuredToken(opts.readTokenFile, process.env.DRAGONFLY_READ_TOKEN, '--read-token-file');
  const limits = {
    maxStreams: count(opts.maxStreams, '--max-streams'),
    maxStreamsPerAddress: count(opts.maxStreamsPerAddress, '--max-streams-per-address'),
    maxConnections: count(opts.maxConnections, '--max-connections'),
    maxConnectionsPerAddress: count(opts.maxConnectionsPerAddress, '--max-connections-per-address'),
    maxDiscovered: count(opts.maxDiscovered, '--max-discovered'),
    maxEvents: count(opts.maxEvents, '--max-events'),
    p2pCacheBytes: sizeOption(opts.p2pCacheSize ?? '8GiB', '--p2p-cache-size'),
  };
  const p2pUploadRate = rateLimit(opts.p2pUploadLimit);
  const stateDir = stateDirFrom(opts.state);
  const publicUrl = opts.publicUrl ?? `http://${http.host === '0.0.0.0' || http.host === '::' ? (opts.dhcpIp ?? firstIpv4()) : http.host}:${http.port}`;

  if (opts.fleet && opts.repo) throw new DragonflyError('DF_ERR_SERVE_CONFIG', 'give --fleet DIR or --repo URL, not both');
  const pollMs = opts.poll ? durationMs(opts.poll) : 30_000;
  const webhookSecret = opts.webhookSecretFile ? fs.readFileSync(opts.webhookSecretFile, 'utf8').trim() : process.env.DRAGONFLY_WEBHOOK_SECRET || undefined;
  // Constructed before anything listens, so a bad URL, branch or path is a usage error at start.
  const git = opts.repo
    ? new GitSource({
        url: opts.repo,
        dir: gitCacheDir(stateDir, opts.repo),
        ...(opts.branch ? { branch: opts.branch } : {}),
        ...(opts.path ? { path: opts.path } : {}),
        ...(opts.gitCredentialsFile ? { credentialsFile: opts.gitCredentialsFile } : {}),
      })
    : undefined;

  const store = LmdbStore.open(stateDir);
  const secret = loadOrCreateSecret(stateDir);
  // Without --mage-dir, Mage is built into the state directory (served from the start: files appear there).
  const mageDir = opts.mageDir ?? (opts.noMageBuild ? undefined : path.join(stateDir, 'mage'));
  if (mageDir && !opts.mageDir) fs.mkdirSync(mageDir, { recursive: true });
  const closers: (() => Promise<unknown>)[] = [() => store.close()];
  try {
    if (!apiToken && !readToken) log.warn('no DRAGONFLY_API_TOKEN or DRAGONFLY_READ_TOKEN: the read API, the event stream, /metrics and admin calls are all refused');
    if (!mageDir) log.warn('--no-mage-build and no --mage-dir: discovery and imaging scripts point at /mage/vmlinuz and /mage/initrd, which will 404');
    if (!fs.existsSync(ipxeDir)) log.warn({ ipxeDir }, 'no iPXE binaries: install Debian\'s ipxe package or pass --ipxe-dir');

    // The GitOps controller, fed by the fleet's source.
    let follower: Follower | undefined;
    if (opts.fleet || git) {
      const source = git ? `git ${git.displayUrl} ${git.branch}${git.path ? ` ${git.path}` : ''}` : `directory ${path.resolve(opts.fleet!)}`;
      const controller = await Controller.start({ store, log: log.child({ part: 'controller' }), source, ...(opts.manual ? { manual: true } : {}) });
      closers.unshift(() => controller.close());
      const onError = (e: Error) => log.error({ code: (e as DragonflyError).code, err: sanitizeUrl(e.message) }, 'fleet source failed; the last good revision stays in force');
      const onRevision = controller.offer.bind(controller);
      follower = git ? followGit(git, { pollMs, onRevision, onError }) : await followDirectory(opts.fleet!, { onRevision, onError });
      closers.unshift(() => follower!.close());
      log.info({ source, manual: opts.manual ?? false, ...(git ? { pollMs, webhooks: webhookSecret !== undefined } : {}) }, 'following the fleet');
    }

    // The P2P seed: the one reader of each image's origin, for the machines that fetch it together (docs/p2p.md).
    const seed = new Seed({ cacheDir: path.join(stateDir, 'p2p'), maxCacheBytes: limits.p2pCacheBytes, log: log.child({ part: 'p2p-seed' }) });
    closers.unshift(() => seed.close());

    let tftpServer: Awaited<ReturnType<typeof startTftpServer>> | undefined;
    const app = await buildServer({
      store,
      secret,
      serverUrl: publicUrl,
      ...(mageDir ? { mageDir } : {}),
      ...(fs.existsSync(ipxeDir) ? { ipxeDir } : {}),
      ...(apiToken ? { apiToken } : {}),
      ...(readToken ? { readToken } : {}),
      events: {
        ...(limits.maxStreams ? { maxStreams: limits.maxStreams } : {}),
        ...(limits.maxStreamsPerAddress ? { maxStreamsPerAddress: limits.maxStreamsPerAddress } : {}),
      },
      connections: {
        ...(limits.maxConnections ? { maxConnections: limits.maxConnections } : {}),
        ...(limits.maxConnectionsPerAddress ? { maxConnectionsPerAddress: limits.maxConnectionsPerAddress } : {}),
      },
      ...(limits.maxDiscovered ? { maxDiscovered: limits.maxDiscovered } : {}),
      ...(limits.maxEvents ? { maxEvents: limits.maxEvents } : {}),
      ...(webhookSecret ? { webhookSecret } : {}),
      ...(git ? { webhookBranch: git.branch, onWebhookPush: () => follower?.fetchNow() } : {}),
      tftpStats: () => tftpServer?.stats() ?? { transfers: 0, bytes: 0, errors: 0, unconfirmed: 0, active: 0 },
      p2pSeed: seed,
      ...(p2pUploadRate ? { p2pUploadRate } : {}),
      logger: log,
    });
    closers.unshift(() => app.close());
    const mage = mageDir && !opts.mageDir ? new MageInStateDir(mageDir, log) : undefined;
    if (mage) {
      // A callback hook, not an async one: it runs on every request, PXE's included (see buildServer).
      app.addHook('onRequest', (req, reply, done) => {
        if (mage.state === 'ready' || !req.url.startsWith('/mage/')) return done();
        if (mage.state === 'failed') return void reply.code(503).send(errorBody('DF_ERR_MAGE_BUILD', 'Mage could not be built; the server log says why', 'fix what the log says and restart serve, or pass --mage-dir'));
        // iPXE waits Retry-After seconds and asks again, inside the same `kernel` command (httpcore.c).
        void reply.code(503).header('retry-after', String(MAGE_RETRY_AFTER_S)).send(errorBody('DF_ERR_MAGE_BUILD', 'Mage is being built', `retry in ${MAGE_RETRY_AFTER_S} s`));
      });
    }
    await app.listen({ host: http.host, port: http.port });
    log.info({ http: `${http.host}:${http.port}`, publicUrl, state: path.resolve(stateDir) }, 'HTTP listening');
    if (mage) {
      mage.start();
      closers.unshift(() => mage.stop());
    }

    if (tftp) {
      const script = Buffer.from(entryScript(publicUrl));
      const sources = [memorySource({ 'boot.ipxe': script, 'autoexec.ipxe': script }), ...(fs.existsSync(ipxeDir) ? [directorySource(ipxeDir)] : [])];
      tftpServer = await startTftpServer({ host: tftp.host, port: tftp.port, source: combinedSource(...sources), log: log.child({ part: 'tftp' }) });
      closers.unshift(() => tftpServer!.close());
      log.info({ tftp: `${tftp.host}:${tftpServer.address().port}` }, 'TFTP listening');
    }
    if (opts.dhcp === 'proxy') {
      const dhcp = await startProxyDhcp({
        interfaceIp: opts.dhcpIp!,
        config: { serverIp: opts.dhcpIp!, httpUrl: publicUrl, bootfiles: { bios: 'undionly.kpxe', efi64: 'ipxe.efi' }, ...(opts.chainloadIpxe ? { chainloadIpxeRoms: true } : {}) },
        log: log.child({ part: 'dhcp' }),
      });
      closers.unshift(() => dhcp.close());
      log.info({ ip: opts.dhcpIp, chainloadIpxe: opts.chainloadIpxe ?? false }, 'proxyDHCP listening on UDP 67 and 4011');
    }
  } catch (e) {
    for (const close of closers) await close().catch(() => {});
    if ((e as NodeJS.ErrnoException).code === 'EADDRINUSE' || (e as NodeJS.ErrnoException).code === 'EACCES') {
      throw new DragonflyError('DF_ERR_SERVE_CONFIG', `cannot listen: ${(e as Error).message}`);
    }
    throw e;
  }

  // Graceful shutdown: stop taking requests, finish what is in flight, close the store last.
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal }, 'shutting down');
      resolve();
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  for (const close of closers) await close().catch((e: unknown) => log.error({ err: e }, 'close failed'));
  log.info('stopped');
  return 0;
}
