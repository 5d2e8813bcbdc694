// `dragonfly p2p`: operate the P2P image distribution of a running server (docs/p2p.md).
//   preheat --template NAME: the seed reads the template's image now, before the first machine asks
//   status: each image the server distributes, and its swarm
//   token --sha256 HEX: the image's P2P token, for peers outside Mage (`dragonfly peer get`)
import { p2pToken, readSecret } from '../boot/tokens.js';
import { DragonflyError } from '../schemas/errors.js';
import { stateDirFrom } from '../store/lmdb.js';
import { loadFleetOrThrow, requireFleetArg } from './fleet.js';
import type { Io } from './output.js';
import { table } from './table.js';
import { tokenFrom } from './token-file.js';

export const p2pHelp = `Usage: dragonfly p2p preheat --template NAME --fleet DIR [--server URL] [--token-file FILE]
       dragonfly p2p status [--server URL] [--json] [--token-file FILE]
       dragonfly p2p token --sha256 HEX [--state DIR]

P2P image distribution: \`dragonfly serve\` runs a seed that reads each image from its origin once, and
the machines imaging from it fetch pieces from each other (docs/p2p.md).

  preheat   the seed reads the image of template NAME (as declared in the fleet DIR) now, before the first
            machine asks; an apply that creates workflows does this by itself. Needs the admin token.
  status    each image: preparing, failed, or distributed, with peers, pieces held and bytes from the origin
  token     print the image's P2P token (read from the server secret in --state): give it to peers outside
            Mage, e.g. \`dragonfly peer get --token-file\`

  --server URL        the server (default http://127.0.0.1:8080)
  --token-file FILE   the admin token (preheat) or a read token (status); else DRAGONFLY_API_TOKEN
                      (DRAGONFLY_READ_TOKEN for status)
`;

interface P2pOptions {
  sub?: string;
  template?: string;
  fleet?: string;
  server?: string;
  tokenFile?: string;
  sha256?: string;
  state?: string;
  json?: boolean;
}

export async function p2pCommand(opts: P2pOptions, io: Io): Promise<number> {
  const server = (opts.server ?? 'http://127.0.0.1:8080').replace(/\/+$/, '');
  switch (opts.sub) {
    case 'preheat':
      return preheat(opts, server, io);
    case 'status':
      return status(opts, server, io);
    case 'token':
      return token(opts, io);
    default:
      throw new DragonflyError('DF_ERR_USAGE', opts.sub ? `unknown p2p subcommand "${opts.sub}"` : 'dragonfly p2p needs a subcommand', {}, 'dragonfly p2p preheat | status | token (dragonfly p2p --help)');
  }
}

async function call(url: string, init: RequestInit): Promise<Response> {
  try {
    return await fetch(url, { ...init, signal: AbortSignal.timeout(30_000) });
  } catch (e) {
    throw new DragonflyError('DF_ERR_USAGE', `cannot reach ${new URL(url).origin}: ${(e as Error).message}`, {}, 'check --server, and that dragonfly serve runs there');
  }
}

async function refused(res: Response, what: string): Promise<never> {
  const body = (await res.json().catch(() => undefined)) as { error?: { code?: string; message?: string } } | undefined;
  if (res.status === 401 || res.status === 403) throw new DragonflyError('DF_ERR_UNAUTHORIZED', `the server refused ${what} (HTTP ${res.status}): ${body?.error?.message ?? ''}`.trim());
  throw new DragonflyError('DF_ERR_USAGE', `the server refused ${what} (HTTP ${res.status} ${body?.error?.code ?? ''}): ${body?.error?.message ?? ''}`.trim());
}

async function preheat(opts: P2pOptions, server: string, io: Io): Promise<number> {
  if (!opts.template) throw new DragonflyError('DF_ERR_USAGE', 'p2p preheat needs --template NAME', {}, 'dragonfly p2p preheat --template NAME --fleet DIR');
  const fleet = loadFleetOrThrow(requireFleetArg(opts.fleet), io, false);
  const template = fleet.templates.get(opts.template);
  if (!template) throw new DragonflyError('DF_ERR_USAGE', `the fleet has no template "${opts.template}"`, {}, `templates: ${[...fleet.templates.keys()].join(', ') || 'none'}`);
  const image = template.spec.image;
  if (!image) throw new DragonflyError('DF_ERR_USAGE', `template "${opts.template}" has no image`);
  const url = image.url.replaceAll('${server.url}', server);
  const sha256 = image.sha256.toLowerCase();
  const auth = tokenFrom(opts.tokenFile, process.env.DRAGONFLY_API_TOKEN);
  const res = await call(`${server}/api/v1/p2p/preheat`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(auth ? { authorization: `Bearer ${auth}` } : {}) },
    body: JSON.stringify({ url, sha256 }),
  });
  if (res.status !== 202) await refused(res, 'the preheat');
  const body = (await res.json()) as { state: string };
  io.out(`preheat: ${opts.template} ${sha256} ${body.state}\n`);
  return 0;
}

interface ImageRow {
  sha256: string;
  state: string;
  url?: string;
  stats?: { peers: number; piecesHeld: number; pieces: number; originBytes: number; dropped: number };
}

async function status(opts: P2pOptions, server: string, io: Io): Promise<number> {
  const auth = tokenFrom(opts.tokenFile, process.env.DRAGONFLY_READ_TOKEN, process.env.DRAGONFLY_API_TOKEN);
  const res = await call(`${server}/api/v1/p2p/images`, { headers: auth ? { authorization: `Bearer ${auth}` } : {} });
  if (!res.ok) await refused(res, 'the image list');
  const { images } = (await res.json()) as { images: ImageRow[] };
  if (opts.json) {
    io.out(JSON.stringify(images, null, 2) + '\n');
    return 0;
  }
  if (images.length === 0) {
    io.out('No images are being distributed.\n');
    return 0;
  }
  const rows = images.map((i) => [
    i.sha256.slice(0, 12),
    i.state,
    i.stats ? String(i.stats.peers) : '-',
    i.stats ? `${i.stats.piecesHeld}/${i.stats.pieces}` : '-',
    i.stats ? String(i.stats.originBytes) : '-',
    i.stats ? String(i.stats.dropped) : '-',
  ]);
  io.out(table(['IMAGE', 'STATE', 'PEERS', 'PIECES HELD', 'ORIGIN BYTES', 'DROPPED'], rows));
  return 0;
}

function token(opts: P2pOptions, io: Io): number {
  const sha256 = opts.sha256?.toLowerCase();
  if (!sha256 || !/^[0-9a-f]{64}$/.test(sha256)) throw new DragonflyError('DF_ERR_USAGE', 'p2p token needs --sha256 HEX (64 hex digits: the template\'s image sha256)');
  io.out(p2pToken(readSecret(stateDirFrom(opts.state)), sha256) + '\n');
  return 0;
}
