// `dragonfly serve`: the thing machines PXE boot from. HTTP (iPXE scripts, Mage files, agent API),
// our TFTP server, and (opt-in) proxyDHCP, in one process over one state store.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { DragonflyError } from '../schemas/errors.js';
import { buildServer } from '../boot/server.js';
import { entryScript } from '../boot/ipxe.js';
import { loadOrCreateSecret } from '../boot/tokens.js';
import { startTftpServer } from '../boot/tftp/server.js';
import { combinedSource, directorySource, memorySource } from '../boot/tftp/source.js';
import { startProxyDhcp } from '../boot/dhcp/server.js';
import { LmdbStore, stateDirFrom } from '../store/lmdb.js';
import { readFleetDir } from '../reconciler/fleet-dir.js';
import { loadFleet } from '../reconciler/load.js';
import { readObserved } from '../reconciler/observed.js';
import { planFleet } from '../reconciler/plan.js';
import { summaryLine } from '../reconciler/render.js';
import type { Io } from './output.js';

export const serveHelp = `Usage: dragonfly serve [--fleet DIR] [--state DIR] [--http HOST:PORT] [--tftp HOST:PORT|off]
                       [--dhcp proxy --dhcp-ip IP] [--public-url URL] [--ipxe-dir DIR] [--mage-dir DIR]

Serve PXE-booting machines: each machine's fate (discover, image, boot its disk) comes from what the
state store says about its MAC. \`dragonfly plan\` / \`apply\` against the same --state change what the
server answers, live.

  --fleet DIR          validate this fleet at start and log what an apply would change
  --state DIR          the state directory (default $DRAGONFLY_STATE or ./.dragonfly)
  --http HOST:PORT     HTTP: iPXE scripts, Mage files, agent and read API (default 0.0.0.0:8080)
  --tftp HOST:PORT     TFTP: iPXE binaries and boot.ipxe / autoexec.ipxe (default 0.0.0.0:69; off: none)
  --dhcp proxy         answer PXE clients next to your DHCP server (UDP 67 and 4011), never leasing
  --dhcp-ip IP         the address of this server on the PXE network (required with --dhcp proxy)
  --public-url URL     how machines reach the HTTP server (default http://FIRST-IPV4:PORT)
  --ipxe-dir DIR       iPXE binaries (default /usr/lib/ipxe, Debian's ipxe package)
  --mage-dir DIR       Mage's vmlinuz and initrd (dragonfly mage build --out DIR)

Environment: DRAGONFLY_API_TOKEN (or --api-token-file FILE) allows admin API calls; without it they are
all refused. DRAGONFLY_LOG_LEVEL (default info). Logs are JSON lines (pino) on stdout.
`;

export interface ServeOptions {
  fleet?: string;
  state?: string;
  http?: string;
  tftp?: string;
  dhcp?: string;
  dhcpIp?: string;
  publicUrl?: string;
  ipxeDir?: string;
  mageDir?: string;
  apiTokenFile?: string;
}

function hostPort(text: string, what: string): { host: string; port: number } {
  const m = /^(.*):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new DragonflyError('DF_ERR_SERVE_CONFIG', `${what} ${JSON.stringify(text)} is not HOST:PORT`);
  return { host: m[1]!.replace(/^\[|\]$/g, '') || '0.0.0.0', port };
}

function firstIpv4(): string {
  for (const list of Object.values(os.networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address;
  }
  return '127.0.0.1';
}

export async function serveCommand(opts: ServeOptions, _io: Io): Promise<number> {
  const log = pino({ name: 'dragonfly', level: process.env.DRAGONFLY_LOG_LEVEL ?? 'info' });
  const http = hostPort(opts.http ?? '0.0.0.0:8080', '--http');
  const tftp = opts.tftp === 'off' ? undefined : hostPort(opts.tftp ?? '0.0.0.0:69', '--tftp');
  if (opts.dhcp !== undefined && opts.dhcp !== 'proxy') throw new DragonflyError('DF_ERR_SERVE_CONFIG', `--dhcp ${opts.dhcp}: only "proxy" is supported`);
  if (opts.dhcp && !opts.dhcpIp) throw new DragonflyError('DF_ERR_SERVE_CONFIG', '--dhcp proxy needs --dhcp-ip, the address machines reach this server at');
  const ipxeDir = opts.ipxeDir ?? '/usr/lib/ipxe';
  const apiToken = opts.apiTokenFile ? fs.readFileSync(opts.apiTokenFile, 'utf8').trim() : process.env.DRAGONFLY_API_TOKEN || undefined;
  const stateDir = stateDirFrom(opts.state);
  const publicUrl = opts.publicUrl ?? `http://${http.host === '0.0.0.0' || http.host === '::' ? (opts.dhcpIp ?? firstIpv4()) : http.host}:${http.port}`;

  const store = LmdbStore.open(stateDir);
  const secret = loadOrCreateSecret(stateDir);
  const closers: (() => Promise<unknown>)[] = [() => store.close()];
  try {
    if (opts.fleet) {
      const { fleet, diagnostics } = loadFleet(readFleetDir(opts.fleet));
      for (const d of diagnostics) log.warn({ code: d.code, file: d.file, line: d.line, col: d.col }, d.message);
      if (fleet) log.info({ fleet: opts.fleet, revision: fleet.revision, plan: summaryLine(planFleet(fleet, await readObserved(store))) }, 'fleet loaded; `dragonfly apply` makes it so');
    }
    if (!opts.mageDir) log.warn('no --mage-dir: discovery and imaging scripts point at /mage/vmlinuz and /mage/initrd, which will 404');
    if (!fs.existsSync(ipxeDir)) log.warn({ ipxeDir }, 'no iPXE binaries: install Debian\'s ipxe package or pass --ipxe-dir');

    let tftpServer: Awaited<ReturnType<typeof startTftpServer>> | undefined;
    const app = await buildServer({
      store,
      secret,
      serverUrl: publicUrl,
      ...(opts.mageDir ? { mageDir: opts.mageDir } : {}),
      ...(fs.existsSync(ipxeDir) ? { ipxeDir } : {}),
      ...(apiToken ? { apiToken } : {}),
      tftpStats: () => tftpServer?.stats() ?? { transfers: 0, bytes: 0, errors: 0, active: 0 },
      logger: log,
    });
    closers.unshift(() => app.close());
    await app.listen({ host: http.host, port: http.port });
    log.info({ http: `${http.host}:${http.port}`, publicUrl, state: path.resolve(stateDir) }, 'HTTP listening');

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
        config: { serverIp: opts.dhcpIp!, httpUrl: publicUrl, bootfiles: { bios: 'undionly.kpxe', efi64: 'ipxe.efi' } },
        log: log.child({ part: 'dhcp' }),
      });
      closers.unshift(() => dhcp.close());
      log.info({ ip: opts.dhcpIp }, 'proxyDHCP listening on UDP 67 and 4011');
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
