// The GitOps loop. Sources (a git branch, a watched directory) offer fleet revisions; the store tells it
// when machines or workflows change. Each round: take the newest revision → load and validate → plan
// against the observed store → apply (unless manual or suspended) → record what happened in the store's
// controller/status key, where `dragonfly status` reads it. Rounds never overlap; offers made during a
// round are coalesced into the next one.
//
// Fail closed: a revision that cannot be read or validated changes nothing. The controller then freezes
// (no applies at all, not even the next wave of a rollout from an older revision) and reports the
// revision's errors until a valid revision arrives. Destructive changes are what the planner allows
// (explicit generation bumps, never protected machines, within maxParallel / maxFailures); the next wave
// of a rollout starts when a finished workflow changes the store.
//
// Incremental: files whose text did not change are not parsed again (FleetLoader), the observed state is
// kept in memory from store notifications (ObservedCache), and a round plans only the machines the new
// revision or the store changes can affect (affectedMachines; reconciler/scope.test.ts checks that this
// equals the full plan). After a start, an invalid revision, or in manual/suspended mode, it plans all.
import { DragonflyError, type ErrorCode } from '../schemas/errors.js';
import type { Note, NoteCode, Plan } from '../schemas/types.js';
import type { Store } from '../store/store.js';
import { APPLIED, AUDIT, CONTROLLER_STATUS, CONTROLLER_SUSPENDED, logKeys } from '../store/keys.js';
import { applyPlan } from './apply.js';
import { formatDiagnostic, type Diagnostic } from './diagnostics.js';
import type { Fleet } from './fleet.js';
import { FleetLoader } from './load.js';
import { ObservedCache } from './observed-cache.js';
import type { SourceFile } from './parse.js';
import { hasChanges, planFleet } from './plan.js';
import { affectedMachines } from './scope.js';
import { summaryLine } from './render.js';

/** One fleet revision, as a source offers it. */
export interface FleetRevision {
  /** Commit SHA, or sha256:… of a directory's files. */
  revision: string;
  files: readonly SourceFile[];
  /** Problems reading the source (an unreadable file): the revision is incomplete and is not applied. */
  errors?: readonly DragonflyError[];
  /** Commit author, "Name <email>", recorded in the audit log. */
  author?: string;
  /** First line of the commit message. */
  subject?: string;
}

/**
 * Where the controller stands, for a console or a bot to switch on (docs/status.md describes each):
 * Starting (no revision read yet), Applied (the newest revision is valid and in effect), PlanPending
 * (manual: changes wait for `dragonfly apply`), Suspended (`dragonfly suspend`: plans, applies nothing),
 * RevisionInvalid (the newest revision fails validation), RevisionUnreadable (the source could not read
 * all of it), ApplyFailed (the last apply failed), ApplyRetrying (an apply lost a race; re-planning).
 */
export const CONDITION_CODES = ['Starting', 'Applied', 'PlanPending', 'Suspended', 'RevisionInvalid', 'RevisionUnreadable', 'ApplyFailed', 'ApplyRetrying'] as const;
export type ConditionCode = (typeof CONDITION_CODES)[number];

export interface ControllerCondition {
  code: ConditionCode;
  /** For people; switch on `code`. */
  message: string;
  /** When the controller entered this condition (the code last changed). */
  since: string;
  /** The DF_* codes of the errors behind RevisionInvalid, RevisionUnreadable and ApplyFailed (docs/errors.md). */
  errorCodes?: ErrorCode[];
}

/** What `dragonfly status` shows; written to the store at the end of every round. */
export interface ControllerStatus {
  source: string;
  mode: 'auto' | 'manual';
  suspended: boolean;
  updatedAt: string;
  condition: ControllerCondition;
  /** The newest revision seen, valid or not. */
  seen?: { revision: string; at: string; valid: boolean; author?: string; subject?: string; errors: string[] };
  /** The last revision applied by this controller (or found applied when it started). */
  applied?: { revision: string; at: string; planHash?: string; summary?: string; author?: string };
  /** Changes that wait: in manual mode or while suspended, what an apply would do. */
  pending: { summary: string; lines: string[] };
  /** Plan notes worth a human's eye: drift, machines seen but not in git, deferred/blocked/failed. */
  notes: { kind: string; code: NoteCode; machine: string; message: string }[];
  /** Why the last round failed, if it did (not a validation error: those are in `seen`). */
  error?: string;
  rounds: number;
}

/** The audit entry of a revision the controller refused (the applied ones are apply.ts's AuditEntry). */
export interface RejectedRevision {
  at: string;
  user: 'controller';
  source: 'controller';
  author?: string;
  fleetRevision: string;
  outcome: 'rejected';
  errors: string[];
}

export interface ControllerLog {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  error(obj: object, msg?: string): void;
}

export interface ControllerOptions {
  store: Store;
  log: ControllerLog;
  /** Shown in status: "git https://… main" or "directory /srv/fleet". */
  source: string;
  /** Detect and report only; never apply. */
  manual?: boolean;
  /** Wait this long after a store change before re-planning, to take a burst of changes at once. */
  storeDebounceMs?: number;
  now?: () => Date;
}

const MAX_NOTES = 200;
const MAX_ERRORS = 50;
const MAX_PENDING_LINES = 200;
/** An apply that loses a race with another writer is retried in the next round, at most this often in a row. */
const MAX_STALE_RETRIES = 5;

export class Controller {
  private readonly loader = new FleetLoader();
  private offered: FleetRevision | undefined;
  /** The fleet of the last plan that was applied (or needed nothing); scoped plans diff against it. */
  private planned: Fleet | undefined;
  /** What the store changed since the last applied plan: machines, and assignments whose rollout moved. */
  private readonly pendingMacs = new Set<string>();
  private readonly pendingRollouts = new Set<string>();
  /** Plan notes per machine, kept across scoped plans. */
  private readonly notesByMac = new Map<string, Note[]>();
  /** The newest valid fleet, and the revision it came from. */
  private fleet: Fleet | undefined;
  private fleetAuthor: string | undefined;
  private status: ControllerStatus;
  private running: Promise<void> | undefined;
  private again = false;
  private closed = false;
  private staleRetries = 0;
  private storeTimer: NodeJS.Timeout | undefined;
  private readonly unwatch: (() => void)[] = [];
  private readonly idleWaiters: (() => void)[] = [];

  private constructor(
    private readonly opts: ControllerOptions,
    private readonly cache: ObservedCache,
    initial: ControllerStatus,
  ) {
    this.status = initial;
  }

  /** Start watching the store; rounds begin with the first offered revision. */
  static async start(opts: ControllerOptions): Promise<Controller> {
    const now = (opts.now ?? (() => new Date()))().toISOString();
    const { revision, previous, suspended, applied } = await opts.store.read((snap) => ({
      revision: snap.revision,
      previous: snap.get<ControllerStatus>(CONTROLLER_STATUS)?.value,
      suspended: snap.get<unknown>(CONTROLLER_SUSPENDED) !== undefined,
      applied: snap.get<{ revision: string; at: string; planHash: string }>(APPLIED)?.value,
    }));
    const cache = await ObservedCache.open(opts.store);
    const c = new Controller(opts, cache, {
      source: opts.source,
      mode: opts.manual ? 'manual' : 'auto',
      suspended,
      updatedAt: now,
      ...(applied ? { applied: { ...(previous?.applied ?? {}), revision: applied.revision, at: applied.at, planHash: applied.planHash } } : {}),
      condition: { code: 'Starting', message: 'waiting for the first fleet revision', since: now },
      pending: { summary: '', lines: [] },
      notes: [],
      rounds: 0,
    });
    // Machines and workflows changing (a discovery, a finished workflow) can change the plan.
    c.unwatch.push(cache.onChange((macs, assignments) => c.storeChanged(macs, assignments)));
    c.unwatch.push(() => cache.close());
    // `dragonfly suspend` / `resume`, possibly from another process.
    let stopSuspended = () => {};
    const watchSuspended = (from: number) => {
      stopSuspended = opts.store.watch(CONTROLLER_SUSPENDED, from, () => c.trigger(), () => {
        // Compacted past us: look again (trigger re-reads the flag) and follow from now.
        c.trigger();
        void opts.store.read((s) => s.revision).then(watchSuspended);
      });
    };
    watchSuspended(revision);
    c.unwatch.push(() => stopSuspended());
    return c;
  }

  /** A source has a revision (maybe the same as before: then only the store may have changed). */
  offer(rev: FleetRevision): void {
    this.offered = rev;
    this.trigger();
  }

  /** Resolves once no round is running or queued (tests, shutdown). */
  idle(): Promise<void> {
    if (!this.running && !this.again) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  current(): ControllerStatus {
    return this.status;
  }

  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.storeTimer);
    for (const u of this.unwatch) u();
    await this.running;
  }

  private storeChanged(macs: Set<string>, rollouts: Set<string>): void {
    if (this.closed) return;
    for (const m of macs) this.pendingMacs.add(m);
    for (const a of rollouts) this.pendingRollouts.add(a);
    if (this.storeTimer) return;
    this.storeTimer = setTimeout(() => {
      this.storeTimer = undefined;
      this.trigger();
    }, this.opts.storeDebounceMs ?? 20);
  }

  private trigger(): void {
    if (this.closed) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = (async () => {
      do {
        this.again = false;
        await this.round().catch((e: unknown) => this.opts.log.error({ err: e }, 'controller round failed'));
      } while (this.again && !this.closed);
      this.running = undefined;
      for (const w of this.idleWaiters.splice(0)) w();
    })();
  }

  private now(): string {
    return (this.opts.now ?? (() => new Date()))().toISOString();
  }

  /** One round of the loop. */
  private async round(): Promise<void> {
    const rev = this.offered;
    if (!rev) return; // nothing to reconcile against yet
    const log = this.opts.log;
    const at = this.now();
    const status: ControllerStatus = { ...this.status, updatedAt: at, rounds: this.status.rounds + 1 };
    delete status.error;

    // 1. A new revision: load and validate it. An invalid one freezes the loop until a valid one comes.
    if (rev.revision !== status.seen?.revision || !this.fleet) {
      const diagnostics: Diagnostic[] = [];
      const loaded = rev.errors?.length ? undefined : this.loader.load(rev.files, { revision: rev.revision });
      if (loaded) diagnostics.push(...loaded.diagnostics.filter((d) => d.severity === 'error'));
      const errors = [...(rev.errors ?? []).map((e) => `${e.code}: ${e.message}`), ...diagnostics.map(formatDiagnostic)];
      status.seen = { revision: rev.revision, at, valid: errors.length === 0, ...(rev.author ? { author: rev.author } : {}), ...(rev.subject ? { subject: rev.subject } : {}), errors: errors.slice(0, MAX_ERRORS) };
      if (errors.length > 0 || !loaded?.fleet) {
        status.condition = rev.errors?.length
          ? condition(status, 'RevisionUnreadable', `revision ${rev.revision} could not be read whole: nothing is applied until a revision is read and valid`, rev.errors.map((e) => e.code))
          : condition(status, 'RevisionInvalid', `revision ${rev.revision} is invalid (${errors.length} error${errors.length === 1 ? '' : 's'}): nothing is applied until a valid revision arrives`, diagnostics.map((d) => d.code));
        log.warn({ revision: rev.revision, errors: errors.length, first: errors.slice(0, 5) }, 'fleet revision is invalid: nothing is applied until a valid revision arrives');
        if (this.status.seen?.revision !== rev.revision) await this.recordRejected(rev, errors);
        this.fleet = undefined;
        this.planned = undefined; // after a fix, plan everything again
        await this.writeStatus(status);
        return;
      }
      this.fleet = loaded.fleet;
      this.fleetAuthor = rev.author;
      log.info({ revision: rev.revision, author: rev.author, machines: loaded.fleet.machines.length }, 'fleet revision loaded');
    }
    const fleet = this.fleet!;

    // 2. Plan against the observed store: only what can have changed, unless a full plan is due.
    const suspended = await this.opts.store.read((snap) => snap.get(CONTROLLER_SUSPENDED) !== undefined);
    const observed = this.cache.current();
    const macs = [...this.pendingMacs];
    const rollouts = [...this.pendingRollouts];
    this.pendingMacs.clear();
    this.pendingRollouts.clear();
    const full = this.planned === undefined || this.opts.manual === true || suspended;
    const scope = full ? 'all' : affectedMachines(this.planned, fleet, macs, rollouts);
    const plan = planFleet(fleet, observed, { now: new Date(at), scope });
    status.suspended = suspended;
    this.keepNotes(plan, scope);
    status.notes = [...this.notesByMac.values()]
      .flat()
      .filter((n) => n.kind !== 'in-progress' && n.kind !== 'waiting-discovery')
      .slice(0, MAX_NOTES)
      .map((n) => ({ kind: n.kind, code: n.code, machine: n.machine?.name ?? n.machine?.mac ?? '', message: n.message }));
    const retry = () => {
      for (const m of macs) this.pendingMacs.add(m);
      for (const a of rollouts) this.pendingRollouts.add(a);
    };

    // 3. Manual or suspended: report what an apply would do, and stop there.
    if (this.opts.manual || suspended) {
      status.pending = hasChanges(plan) ? pendingOf(plan) : { summary: '', lines: [] };
      const waiting = `${plan.changes.length} change${plan.changes.length === 1 ? '' : 's'}`;
      status.condition = suspended
        ? condition(status, 'Suspended', `suspended: revision ${fleet.revision} is planned, not applied (${hasChanges(plan) ? `${waiting} waiting` : 'nothing waiting'}); \`dragonfly resume\` applies again`)
        : hasChanges(plan)
          ? condition(status, 'PlanPending', `manual mode: revision ${fleet.revision} has ${waiting} waiting for \`dragonfly apply\``)
          : applied(status, fleet.revision);
      if (hasChanges(plan)) log.info({ revision: fleet.revision, plan: summaryLine(plan), why: suspended ? 'suspended' : 'manual' }, 'changes wait for an apply');
      this.planned = undefined; // plan everything once applying resumes
      await this.writeStatus(status);
      return;
    }
    if (!hasChanges(plan)) {
      this.planned = fleet;
      status.pending = { summary: '', lines: [] };
      status.condition = applied(status, fleet.revision);
      await this.writeStatus(status);
      return;
    }

    // 4. Apply. Losing a race with another writer (a report, a CLI apply) makes the plan stale: re-plan.
    try {
      const result = await applyPlan(this.opts.store, plan, fleet, { user: 'controller', source: 'controller', ...(this.fleetAuthor ? { author: this.fleetAuthor } : {}), now: new Date(at) });
      this.staleRetries = 0;
      this.planned = fleet;
      status.applied = { revision: fleet.revision, at, planHash: plan.hash, summary: summaryLine(plan), ...(this.fleetAuthor ? { author: this.fleetAuthor } : {}) };
      status.pending = { summary: '', lines: [] };
      status.condition = applied(status, fleet.revision);
      log.info({ revision: fleet.revision, plan: summaryLine(plan), scope: scope === 'all' ? 'all' : scope.size, storeRevision: result.revision, workflows: result.workflows.length }, 'applied');
    } catch (e) {
      retry();
      const errorCodes = e instanceof DragonflyError ? [e.code] : [];
      if (e instanceof DragonflyError && e.code === 'DF_ERR_PLAN_STALE' && this.staleRetries++ < MAX_STALE_RETRIES) {
        this.again = true;
        status.condition = condition(status, 'ApplyRetrying', `another writer changed the store while revision ${fleet.revision} was applied: planning again`, errorCodes);
      } else {
        status.error = (e as Error).message;
        status.condition = condition(status, 'ApplyFailed', `applying revision ${fleet.revision} failed: ${(e as Error).message}`, errorCodes);
        status.pending = pendingOf(plan);
        this.planned = undefined;
        log.error({ err: e, revision: fleet.revision }, 'apply failed');
      }
    }
    await this.writeStatus(status);
  }

  /** Notes of a full plan replace all; a scoped plan's replace those of the machines it planned. */
  private keepNotes(plan: Plan, scope: ReadonlySet<string> | 'all'): void {
    if (scope === 'all') this.notesByMac.clear();
    else for (const mac of scope) this.notesByMac.delete(mac);
    for (const n of plan.notes) {
      const mac = n.machine?.mac ?? '';
      this.notesByMac.set(mac, [...(this.notesByMac.get(mac) ?? []), n]);
    }
  }

  /** An invalid revision goes into the audit log too, so `dragonfly history` shows why nothing happened. */
  private async recordRejected(rev: FleetRevision, errors: string[]): Promise<void> {
    const at = new Date(this.now());
    const [key] = logKeys(AUDIT, at, 1) as [string];
    const entry: RejectedRevision = {
      at: at.toISOString(),
      user: 'controller',
      source: 'controller',
      ...(rev.author ? { author: rev.author } : {}),
      fleetRevision: rev.revision,
      outcome: 'rejected',
      errors: errors.slice(0, MAX_ERRORS),
    };
    await this.opts.store.commit({ compare: [{ key, modRevision: 0 }], put: [{ key, value: entry }] });
  }

  private async writeStatus(status: ControllerStatus): Promise<void> {
    this.status = status;
    await this.opts.store.commit({ put: [{ key: CONTROLLER_STATUS, value: status }] });
  }
}

/** The condition `code`, keeping `since` while the code stays the same. */
function condition(status: ControllerStatus, code: ConditionCode, message: string, errorCodes: ErrorCode[] = []): ControllerCondition {
  const since = status.condition.code === code ? status.condition.since : status.updatedAt;
  const codes = [...new Set(errorCodes)];
  return { code, message, since, ...(codes.length > 0 ? { errorCodes: codes } : {}) };
}

function applied(status: ControllerStatus, revision: string): ControllerCondition {
  return condition(status, 'Applied', `revision ${revision} is applied: the store matches it`);
}

function pendingOf(plan: Plan): ControllerStatus['pending'] {
  return {
    summary: summaryLine(plan),
    lines: plan.changes.slice(0, MAX_PENDING_LINES).map((c) => `${c.action} ${c.machine.name ?? c.machine.mac}: ${c.reason}`),
  };
}
