// The event stream behind GET /api/v1/events: one store watch for every client, each change serialised
// once into a bounded ring that every client reads through its own cursor. A client is written to only
// while its socket takes data (backpressure): one that does not read falls behind the ring and is closed
// (it resumes with Last-Event-ID), so ten clients that never read cost ten cursors, not ten copies of
// the history. A `since` older than the ring is answered 410 with a re-list hint, as a Kubernetes watch
// cache does.
import type { ServerResponse } from 'node:http';
import { EVENTS, MACHINES, WORKFLOWS } from '../store/keys.js';
import type { Change, Snapshot, Store } from '../store/store.js';
import type { Workflow } from '../schemas/types.js';
import { publicWorkflow } from './public.js';

const STREAMED = [MACHINES, WORKFLOWS, EVENTS];
/** Each client gets a comment this often, so proxies keep the connection; spread over ticks of 1 s so that
 * thousands of idle clients never cost one burst of writes. */
const HEARTBEAT_TICKS = 15;
const TICK_MS = 1000;
/** A client whose unsent bytes stay above this at its heartbeat has stopped reading: it is dropped. */
const STALLED_BYTES = 1024 * 1024;

export interface EventHubOptions {
  /** Events the ring holds at most (default 10,000). */
  maxEvents?: number;
  /** Bytes of serialised events the ring holds at most (default 32 MiB). */
  maxBytes?: number;
  /** Streams open at once, in all (default 4,096) and per client address (default 64). */
  maxStreams?: number;
  maxStreamsPerAddress?: number;
  /** How many revisions back the ring is filled from at start, so clients resume across a restart (default 10,000). */
  replayRevisions?: number;
}

interface Entry {
  seq: number;
  revision: number;
  text: string;
}

interface Client {
  res: ServerResponse;
  address: string;
  /** Sequence number of the next entry to write. */
  next: number;
  /** Waiting for 'drain': the socket holds what we wrote and takes no more for now. */
  blocked: boolean;
  /** Which of the HEARTBEAT_TICKS ticks is its heartbeat's. */
  slot: number;
}

export type Admission = { ok: true } | { ok: false; reason: 'compacted'; oldest: number } | { ok: false; reason: 'too-many'; scope: 'total' | 'address' };

function kindOf(key: string): 'machine' | 'workflow' | 'event' {
  return key.startsWith(MACHINES) ? 'machine' : key.startsWith(WORKFLOWS) ? 'workflow' : 'event';
}

/**
 * The events of one batch of changes, each paired with the value it had at that very revision. A key that
 * changed again since (its value in the snapshot is newer) is left out here: the later change carries it.
 * So an event never pairs an old id with a newer value, and every key's last change is always sent.
 */
export function eventsOf(changes: Change[], snap: Snapshot): { revision: number; text: string }[] {
  const out: { revision: number; data: string; kind: string }[] = [];
  for (const c of [...changes].sort((a, b) => a.revision - b.revision)) {
    if (!STREAMED.some((p) => c.key.startsWith(p))) continue;
    const now = snap.get<unknown>(c.key);
    let value: unknown = null;
    if (c.type === 'put') {
      if (!now || now.modRevision !== c.revision) continue;
      value = kindOf(c.key) === 'workflow' ? publicWorkflow(now.value as Workflow) : now.value;
    } else if (now) continue;
    out.push({ revision: c.revision, kind: kindOf(c.key), data: JSON.stringify({ key: c.key, type: c.type, revision: c.revision, value }) });
  }
  // One commit can change hundreds of keys. Only the last event of a revision carries the id (SSE keeps the
  // previous id for events without one), so a client cut off inside a revision resumes from the revision
  // before it and gets all of it again: duplicates of whole values, never a gap.
  return out.map((e, i) => ({
    revision: e.revision,
    text: `${out[i + 1]?.revision === e.revision ? '' : `id: ${e.revision}\n`}event: ${e.kind}\ndata: ${e.data}\n\n`,
  }));
}

export class EventHub {
  private ring: Entry[] = [];
  private ringBytes = 0;
  private nextSeq = 0;
  /** Every event after this revision is in the ring; a client may resume from here or later. */
  private floor = 0;
  private readonly clients = new Set<Client>();
  private readonly perAddress = new Map<string, number>();
  private stopWatch: (() => void) | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private chain: Promise<void> = Promise.resolve();
  private readonly maxEvents: number;
  private readonly maxBytes: number;
  private readonly maxStreams: number;
  private readonly maxPerAddress: number;
  private closed = false;
  private attached = 0;
  /** Clients closed because they fell behind the ring (for /metrics and tests). */
  dropped = 0;

  constructor(private readonly store: Store, private readonly opts: EventHubOptions = {}) {
    this.maxEvents = opts.maxEvents ?? 10_000;
    this.maxBytes = opts.maxBytes ?? 32 * 1024 * 1024;
    this.maxStreams = opts.maxStreams ?? 4096;
    this.maxPerAddress = opts.maxStreamsPerAddress ?? 64;
  }

  /** Fill the ring from the store's recent changes and follow new ones. */
  async start(): Promise<void> {
    const head = await this.store.read((s) => s.revision);
    const oldest = await this.store.oldestRevision();
    this.floor = Math.max(oldest, head - (this.opts.replayRevisions ?? 10_000), 0);
    this.follow(this.floor);
    let tick = 0;
    this.heartbeat = setInterval(() => {
      tick = (tick + 1) % HEARTBEAT_TICKS;
      for (const c of this.clients) {
        if (c.slot !== tick) continue;
        // A quiet server still finds a client that stopped reading: its heartbeats pile up unsent.
        if (c.blocked || c.res.writableLength >= c.res.writableHighWaterMark) {
          if (c.res.writableLength > STALLED_BYTES) this.drop(c);
          continue;
        }
        c.res.write(': keep-alive\n\n');
      }
    }, TICK_MS);
    this.heartbeat.unref();
  }

  private follow(from: number): void {
    this.stopWatch = this.store.watch(
      '',
      from,
      (changes) => {
        this.chain = this.chain.then(async () => {
          if (this.closed) return;
          const read = (snap: Snapshot) => eventsOf(changes, snap);
          const events = this.store.readSync ? this.store.readSync(read) : await this.store.read(read);
          for (const e of events) this.push(e.revision, e.text);
          for (const c of this.clients) this.pump(c);
        });
      },
      (oldest) => {
        // The store compacted changes this watch had not delivered: nobody can resume across the gap. Until
        // the new head is known no `since` is good (floor = infinity), and every stream ends now.
        this.ring = [];
        this.ringBytes = 0;
        this.floor = Number.POSITIVE_INFINITY;
        for (const c of [...this.clients]) {
          c.res.destroy();
          this.detach(c);
        }
        void this.store.read((s) => s.revision).then((head) => {
          if (this.closed) return;
          this.floor = Math.max(head, oldest);
          this.follow(this.floor);
        });
      },
    );
  }

  private push(revision: number, text: string): void {
    this.ring.push({ seq: this.nextSeq++, revision, text });
    this.ringBytes += text.length;
    while (this.ring.length > this.maxEvents || this.ringBytes > this.maxBytes) {
      const gone = this.ring.shift()!;
      this.ringBytes -= gone.text.length;
      this.floor = gone.revision;
    }
  }

  /** Whether a stream from `address` resuming after `since` can be served now. */
  admit(address: string, since: number | undefined): Admission {
    if (since !== undefined && since < this.floor) return { ok: false, reason: 'compacted', oldest: this.floor };
    if (this.clients.size >= this.maxStreams) return { ok: false, reason: 'too-many', scope: 'total' };
    if ((this.perAddress.get(address) ?? 0) >= this.maxPerAddress) return { ok: false, reason: 'too-many', scope: 'address' };
    return { ok: true };
  }

  /** The newest revision the hub has taken in (a stream without `since` starts after it). */
  get revision(): number {
    return this.ring.at(-1)?.revision ?? this.floor;
  }

  get streams(): number {
    return this.clients.size;
  }

  /** Start streaming to `res` (headers already written) every event after `since`. Call admit() first. */
  attach(res: ServerResponse, address: string, since: number): void {
    // The first entry after `since`: entries are in revision order.
    let i = this.ring.findIndex((e) => e.revision > since);
    if (i < 0) i = this.ring.length;
    const client: Client = { res, address, next: (this.ring[0]?.seq ?? this.nextSeq) + i, blocked: false, slot: this.attached++ % HEARTBEAT_TICKS };
    this.clients.add(client);
    this.perAddress.set(address, (this.perAddress.get(address) ?? 0) + 1);
    res.on('drain', () => {
      client.blocked = false;
      this.pump(client);
    });
    res.on('close', () => this.detach(client));
    this.pump(client);
  }

  private detach(client: Client): void {
    if (!this.clients.delete(client)) return;
    const n = (this.perAddress.get(client.address) ?? 1) - 1;
    if (n <= 0) this.perAddress.delete(client.address);
    else this.perAddress.set(client.address, n);
  }

  private drop(client: Client): void {
    this.dropped++;
    // destroy, not end: end() would wait for the socket to take what is buffered, which it never does.
    client.res.destroy();
    this.detach(client);
  }

  /** Write what the client has not had yet, until its socket pushes back. */
  private pump(client: Client): void {
    if (client.res.destroyed) return;
    const base = this.ring[0]?.seq ?? this.nextSeq;
    // Checked even while it is blocked: a client that stopped reading is found here, not at its next drain.
    if (client.next < base) {
      // It fell behind the ring: closing is what bounds the memory it could hold. It resumes with
      // Last-Event-ID and is told 410 if what it missed is gone.
      this.drop(client);
      return;
    }
    if (client.blocked) return;
    while (client.next < this.nextSeq) {
      // What a client holds is bounded by the socket's high-water mark plus one entry, never more.
      if (client.res.writableLength >= client.res.writableHighWaterMark) {
        client.blocked = true;
        return;
      }
      const entry = this.ring[client.next - base]!;
      client.next++;
      if (!client.res.write(entry.text)) {
        client.blocked = true;
        return;
      }
    }
  }

  close(): void {
    this.closed = true;
    this.stopWatch?.();
    clearInterval(this.heartbeat);
    for (const c of [...this.clients]) c.res.end();
    this.clients.clear();
    this.perAddress.clear();
  }
}
