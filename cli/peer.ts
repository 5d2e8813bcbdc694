// `dragonfly peer get`: one downloading peer (p2p/peer.ts) on the command line, as Mage's image2disk uses it:
// the image from the other peers and the server's seed, every piece verified, the file final only when whole.
import { fetchImage, PEER_DEFAULTS, type FetchImageResult } from '../p2p/peer.js';
import { rateLimit } from '../p2p/rate.js';
import { DragonflyError, isDragonflyError } from '../schemas/errors.js';
import { parseDuration } from '../schemas/formats.js';
import type { Io } from './output.js';
import { progressBar } from './progress.js';
import { tokenFrom } from './token-file.js';

export const peerHelp = `Usage: dragonfly peer get URL --sha256 HEX --server SERVER_URL --out FILE [--listen HOST:PORT]
         [--upload-limit RATE] [--download-limit RATE] [--token-file FILE] [--linger DURATION] [--piece-timeout DURATION]
         [--origin-fallback] [--json]

Fetch an OS image over P2P, as Mage's image2disk does: pieces come from the other machines fetching the
same image and from the seed of \`dragonfly serve\`, which read the image from its URL once (docs/p2p.md).
Every piece is checked against the server's manifest (pinned to --sha256) before it is written or served,
and the whole file's sha256 at the end. FILE appears only then: until verified it is FILE.part, which is
removed if the download fails. While downloading, and for the linger after, this peer serves what it holds.

  URL                    the image's own URL (the template's): shown, and read only with --origin-fallback
  --sha256 HEX           the image's sha256, as the template names it
  --server SERVER_URL    the \`dragonfly serve\` that distributes the image
  --out FILE             where the image goes
  --listen HOST:PORT     where this peer serves pieces (default: the address this machine reaches the server
                         from, any free port); the server admits a piece server only on the caller's address
  --upload-limit RATE    e.g. 20MB/s, 100Mbit/s, 1.5GiB/s (default unlimited)
  --download-limit RATE
  --token-file FILE      the image's P2P token (else DRAGONFLY_P2P_TOKEN): \`dragonfly p2p token --sha256 HEX\`
  --linger DURATION      once complete, keep serving up to this long, leaving sooner when nobody asked for a
                         piece for ${PEER_DEFAULTS.lingerIdleMs / 1000} s (default 30s; 0s leaves at once)
  --piece-timeout DURATION  a piece request older than this is abandoned and counted against its parent, and a
                         peer granted a piece that keeps the others waiting longer is reported (default 30s)
  --origin-fallback      a piece no peer holds, which the scheduler will not let the seed give (its origin
                         budget is spent, or forbidden once seeded), is read from URL directly (still verified)
  --json                 the result as one JSON object instead of the line below: file, size, sha256,
                         downloadMs, firstPieceMs, lingerMs, bytesFromPeers, bytesFromSeed, bytesFromOrigin,
                         piecesServed, bytesServed, badPieces, timeouts

At the end one line: "peer: got FILE (BYTES bytes, sha256 verified) in SECONDS s: B bytes from peers,
B bytes from the seed, B bytes from the origin; served N pieces (B bytes) to peers". Exit 0 when the image is
complete and verified, 1 with an error code otherwise. Ctrl-C while lingering stops serving; the file stays.
`;

export interface PeerGetOptions {
  sub?: string;
  url?: string;
  sha256?: string;
  server?: string;
  out?: string;
  listen?: string;
  uploadLimit?: string;
  downloadLimit?: string;
  tokenFile?: string;
  linger?: string;
  pieceTimeout?: string;
  originFallback?: boolean;
  json?: boolean;
}

export async function peerCommand(opts: PeerGetOptions, io: Io): Promise<number> {
  if (opts.sub !== 'get') {
    throw new DragonflyError('DF_ERR_USAGE', opts.sub ? `unknown peer subcommand "${opts.sub}"` : 'dragonfly peer needs a subcommand', {}, 'dragonfly peer get URL --sha256 HEX --server SERVER_URL --out FILE');
  }
  const usage = (message: string) => new DragonflyError('DF_ERR_USAGE', message, {}, 'dragonfly peer get URL --sha256 HEX --server SERVER_URL --out FILE (dragonfly peer --help)');
  if (!opts.url) throw usage('peer get needs the image URL');
  if (!httpUrl(opts.url)) throw new DragonflyError('DF_ERR_URL', `not an http(s) URL: ${JSON.stringify(opts.url.slice(0, 200))}`);
  if (!opts.sha256) throw usage('peer get needs --sha256 HEX');
  if (!/^[0-9a-fA-F]{64}$/.test(opts.sha256)) throw new DragonflyError('DF_ERR_SHA256', `--sha256 is not a sha256: ${JSON.stringify(opts.sha256.slice(0, 80))}`);
  if (!opts.server) throw usage('peer get needs --server SERVER_URL (the dragonfly serve that distributes the image)');
  if (!httpUrl(opts.server)) throw new DragonflyError('DF_ERR_URL', `--server is not an http(s) URL: ${JSON.stringify(opts.server.slice(0, 200))}`);
  if (!opts.out) throw usage('peer get needs --out FILE');
  const token = tokenFrom(opts.tokenFile, process.env.DRAGONFLY_P2P_TOKEN?.trim());
  if (!token) throw usage("peer get needs the image's P2P token: --token-file FILE or DRAGONFLY_P2P_TOKEN (dragonfly p2p token --sha256 HEX prints it)");
  const listen = opts.listen === undefined ? undefined : hostPort(opts.listen);
  const lingerMs = durationMs(opts.linger ?? '30s', '--linger');
  const pieceTimeoutMs = durationMs(opts.pieceTimeout ?? `${PEER_DEFAULTS.pieceTimeoutMs / 1000}s`, '--piece-timeout');
  if (pieceTimeoutMs <= 0) throw new DragonflyError('DF_ERR_DURATION', '--piece-timeout must be longer than 0s');
  const uploadRate = rateLimit(opts.uploadLimit);
  const downloadRate = rateLimit(opts.downloadLimit);

  const shown = opts.url.replace(/\/\/[^/@]*@/, '//'); // never print credentials in a URL
  io.err(`peer: fetching ${shown} (sha256 ${opts.sha256.toLowerCase().slice(0, 12)}…) through ${opts.server}\n`);
  const bar = progressBar('peer get', 2);
  const stop = new AbortController();
  const onSignal = (signal: NodeJS.Signals) =>
    stop.abort(new DragonflyError('DF_ERR_P2P_INTERRUPTED', `peer get was interrupted by ${signal}`, { signal }));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let result: FetchImageResult;
  try {
    result = await fetchImage({
      server: opts.server,
      sha256: opts.sha256,
      token,
      output: { kind: 'file', path: opts.out, atomic: true },
      ...(listen ? { listen } : {}),
      ...(uploadRate ? { uploadRate } : {}),
      ...(downloadRate ? { downloadRate } : {}),
      lingerMs,
      pieceTimeoutMs,
      origin: { url: opts.url, fallback: opts.originFallback === true },
      signal: stop.signal,
      log: {
        info: () => undefined,
        warn: (obj, msg) => io.err(`peer: ${msg.replace(/^peer: /, '')} ${JSON.stringify(obj)}\n`),
      },
      onProgress: (p) => bar.update(p.piecesDone, p.pieces),
    });
  } catch (e) {
    // An abort surfaces as whatever the signal carried: ours is a DragonflyError, fetch's own is not.
    throw stop.signal.aborted && !isDragonflyError(e) ? stop.signal.reason : e;
  } finally {
    bar.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  if (opts.json) {
    const r = result;
    io.out(
      `${JSON.stringify({
        file: opts.out,
        size: r.size,
        sha256: r.manifest.sha256,
        downloadMs: Math.round(r.downloadMs),
        firstPieceMs: Math.round(r.firstPieceMs),
        lingerMs: Math.round(r.lingerMs),
        bytesFromPeers: r.bytesFromPeers,
        bytesFromSeed: r.bytesFromSeed,
        bytesFromOrigin: r.bytesFromOrigin,
        piecesServed: r.served.piecesServed,
        bytesServed: r.served.bytesServed,
        badPieces: r.badPieces,
        timeouts: r.timeouts,
      })}\n`,
    );
    return 0;
  }
  const seconds = ((result.downloadMs + result.lingerMs) / 1000).toFixed(1);
  io.out(
    `peer: got ${opts.out} (${result.size} bytes, sha256 verified) in ${seconds} s: ${result.bytesFromPeers} bytes from peers, ` +
      `${result.bytesFromSeed} bytes from the seed, ${result.bytesFromOrigin} bytes from the origin; ` +
      `served ${result.served.piecesServed} pieces (${result.served.bytesServed} bytes) to peers\n`,
  );
  return 0;
}

function httpUrl(text: string): boolean {
  try {
    const u = new URL(text);
    return u.protocol === 'http:' || u.protocol === 'https:';
  } catch {
    return false;
  }
}

function hostPort(text: string): { host: string; port: number } {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3}):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new DragonflyError('DF_ERR_USAGE', `--listen ${JSON.stringify(text)} is not IPV4:PORT`, {}, 'e.g. --listen 10.0.0.5:7070, or 0.0.0.0:7070 to announce the address this machine reaches the server from');
  return { host: m[1]!, port };
}

function durationMs(text: string, flag: string): number {
  try {
    return parseDuration(text) * 1000;
  } catch {
    throw new DragonflyError('DF_ERR_DURATION', `${flag} ${JSON.stringify(text)} is not a duration such as 30s, 5m or 1h30m`);
  }
}

