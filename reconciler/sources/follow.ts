// Where fleet revisions come from, as the controller consumes them: a git branch followed by polling and
// webhooks, or a directory watched for saves. Both hand over whole revisions (every file, with its
// revision id); the controller decides what to do with them.
import type { FleetRevision } from '../controller.js';
import type { SourceFile } from '../parse.js';
import { watchFleetDir, type FleetSnapshot } from './dir-source.js';
import type { GitSource } from './git-source.js';

export interface Follower {
  /** Fetch now (a webhook said a push happened); coalesced with a fetch already running. */
  fetchNow(): void;
  close(): Promise<void>;
}

export interface FollowOptions {
  onRevision(rev: FleetRevision): void;
  onError(error: Error): void;
}

/**
 * Follow a branch: sync every `pollMs` and whenever fetchNow() is called. A fetch that fails is reported
 * and retried at the next poll; the last good revision stays the controller's.
 */
export function followGit(source: GitSource, opts: FollowOptions & { pollMs: number }): Follower {
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;
  let again = false;
  let closed = false;
  let offered: { commit: string; files: readonly SourceFile[] } | undefined;

  const once = async () => {
    const sync = await source.sync();
    if (sync.commit === offered?.commit) return;
    // After the first commit, read only the blobs a commit changed (git tree diff).
    const [files, info] = await Promise.all([
      offered ? source.filesSince(offered.files, offered.commit, sync.commit).then((r) => r.files) : source.files(sync.commit),
      source.commitInfo(sync.commit),
    ]);
    offered = { commit: sync.commit, files };
    opts.onRevision({ revision: sync.commit, files, author: `${info.author.name} <${info.author.email}>`, subject: info.subject });
  };
  const fetchNow = () => {
    if (closed) return;
    if (running) {
      again = true;
      return;
    }
    clearTimeout(timer);
    running = (async () => {
      do {
        again = false;
        await once().catch((e: unknown) => opts.onError(e as Error));
      } while (again && !closed);
      running = undefined;
      if (!closed) timer = setTimeout(fetchNow, opts.pollMs);
    })();
  };
  fetchNow();
  return {
    fetchNow,
    close: async () => {
      closed = true;
      clearTimeout(timer);
      await running;
    },
  };
}

/** Follow a directory: one revision per editor save (see dir-source.ts), and the directory as it is at start. */
export async function followDirectory(root: string, opts: FollowOptions): Promise<Follower> {
  const offer = (s: FleetSnapshot) =>
    opts.onRevision({ revision: s.revision, files: s.files, ...(s.errors.length ? { errors: s.errors } : {}) });
  const watcher = watchFleetDir(root, { onChange: offer, onError: opts.onError });
  offer(await watcher.ready);
  return { fetchNow: () => undefined, close: () => watcher.close() };
}
