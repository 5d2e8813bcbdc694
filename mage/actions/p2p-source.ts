// image2disk's bytes from the P2P swarm of the server (issue #13 §4, docs/p2p.md): the peer (p2p/peer.ts)
// verifies every piece against the manifest before it is used or served, and the whole image at the end.
// A raw image is written to the target by offset as pieces arrive and served back from the disk; a
// compressed one is handed on in order, as a stream of chunks for the decompressor, and served from a RAM
// window. Once the image is whole the peer goes on serving the rest of the rollout (the linger) while Mage
// runs its next actions; `lingering` settles when it has left the swarm.
import { fetchImage, type FetchImageResult, type PeerProgress } from '../../p2p/peer.js';
import type { Manifest } from '../../p2p/manifest.js';
import type { Target } from './target.js';

export interface P2pSource {
  /** The `dragonfly serve` URL Mage talks to: the scheduler and the seed. */
  server: string;
  /** The image's P2P token, from the claimant's workflow. */
  token: string;
  /** After the image is whole, serve the rollout for at most this long (default 60 s)… */
  lingerMs?: number;
  /** …leaving sooner once nobody asked for a piece for this long (default 5 s). */
  lingerIdleMs?: number;
  /** A piece request older than this is abandoned (default: the peer's 30 s). */
  pieceTimeoutMs?: number;
  /** No piece for this long fails the swarm fetch, and image2disk falls back to the URL (default 60 s). */
  stallMs?: number;
}

export interface SwarmRun {
  /** Settles once the image is whole and verified (rejects with the peer's error). */
  whole: Promise<PeerProgress>;
  /** Settles once the peer has left the swarm (after the linger, or at `stop()`); never rejects. */
  lingering: Promise<FetchImageResult | undefined>;
  /** Ends the fetch, or the linger after it. */
  stop(reason?: unknown): void;
}

interface SwarmOptions {
  sha256: string;
  size?: number;
  onManifest?: (m: Manifest) => void;
  onProgress?: (p: PeerProgress) => void;
  onLog?: (line: string) => void;
}

const DEFAULT_LINGER_MS = 60_000;
const DEFAULT_LINGER_IDLE_MS = 5_000;
const DEFAULT_STALL_MS = 60_000;

function start(p2p: P2pSource, opts: SwarmOptions, output: Parameters<typeof fetchImage>[0]['output']): SwarmRun {
  const abort = new AbortController();
  let resolveWhole!: (p: PeerProgress) => void;
  let rejectWhole!: (e: unknown) => void;
  const whole = new Promise<PeerProgress>((resolve, reject) => ((resolveWhole = resolve), (rejectWhole = reject)));
  whole.catch(() => undefined);
  const run = fetchImage({
    server: p2p.server,
    sha256: opts.sha256,
    ...(opts.size !== undefined ? { size: opts.size } : {}),
    token: p2p.token,
    output,
    lingerMs: p2p.lingerMs ?? DEFAULT_LINGER_MS,
    lingerIdleMs: p2p.lingerIdleMs ?? DEFAULT_LINGER_IDLE_MS,
    stallMs: p2p.stallMs ?? DEFAULT_STALL_MS,
    ...(p2p.pieceTimeoutMs !== undefined ? { pieceTimeoutMs: p2p.pieceTimeoutMs } : {}),
    signal: abort.signal,
    ...(opts.onManifest ? { onManifest: opts.onManifest } : {}),
    ...(opts.onProgress ? { onProgress: opts.onProgress } : {}),
    onWhole: resolveWhole,
    // The peer's own lines say "peer: …"; in Mage's log they read "p2p: …". Of its info lines only the join.
    log: {
      info: (obj, msg) => {
        if (msg.includes('joined')) opts.onLog?.(`p2p: ${msg.replace(/^peer: /, '')}`);
      },
      warn: (obj, msg) => opts.onLog?.(`p2p: ${msg.replace(/^peer: /, '')}${'err' in obj ? `: ${String((obj as { err: unknown }).err)}` : ''}`),
    },
  });
  run.catch(rejectWhole);
  return {
    whole,
    lingering: run.catch(() => undefined),
    stop: (reason) => abort.abort(reason ?? new Error('stopped')),
  };
}

/** A raw image straight onto the target, by offset; served back from there while the rollout goes on. */
export function swarmToTarget(p2p: P2pSource, target: Target, opts: SwarmOptions): SwarmRun {
  return start(p2p, opts, { kind: 'file', path: target.path, offset: target.offset });
}

/**
 * A compressed image as chunks in order, for the decompressor. The peer hands on the next piece only once the
 * consumer took this one, so at most the picker's window waits in memory.
 */
export function swarmStream(p2p: P2pSource, opts: SwarmOptions): SwarmRun & { chunks: AsyncIterable<Uint8Array> } {
  const queue: { bytes: Buffer; taken: () => void }[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  let failure: unknown;
  const run = start(p2p, opts, {
    kind: 'stream',
    onDeliver: (_piece, bytes) =>
      new Promise<void>((taken) => {
        queue.push({ bytes, taken });
        wake?.();
      }),
  });
  run.whole.then(
    () => ((ended = true), wake?.()),
    (e: unknown) => ((failure = e ?? new Error('the P2P fetch failed')), wake?.()),
  );
  async function* chunks(): AsyncGenerator<Uint8Array> {
    try {
      for (;;) {
        const next = queue.shift();
        if (next) {
          next.taken();
          yield next.bytes;
          continue;
        }
        if (failure !== undefined) throw failure;
        if (ended) return;
        await new Promise<void>((resolve) => (wake = resolve));
        wake = undefined;
      }
    } finally {
      // The consumer stopped early (the decoder failed, the image cannot fit): the fetch has nothing to feed.
      if (!ended) run.stop(new Error('image2disk stopped reading the image'));
    }
  }
  return { ...run, chunks: chunks() };
}
