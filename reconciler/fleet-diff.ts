// What a branch changes, at two levels, as pure functions over data:
//  - resources: the Machine / Template / Assignment documents added, removed, changed (field by field)
//    or moved between two revisions of the fleet (`diffResources`, used by `dragonfly diff`);
//  - the plan: of the changes that planning the head would make, those that planning the base against
//    the same observed state would not make identically (`branchPlan`, used by `plan --base --head`).
import { isDeepStrictEqual } from 'node:util';
import { normalizeMac } from '../schemas/mac.js';
import { memorableName } from '../schemas/memorable-name.js';
import type { Change, Note, Plan } from '../schemas/types.js';
import type { Diagnostic } from './diagnostics.js';
import { parseFile, type SourceFile } from './parse.js';
import { planHash } from './plan.js';

export const RESOURCE_KINDS = ['Machine', 'Template', 'Assignment'] as const;
export type ResourceKind = (typeof RESOURCE_KINDS)[number];

/** One field that differs; `before`/`after` absent (undefined; null in JSON) = the field is not there. */
export interface FieldChange {
  path: string;
  before?: unknown;
  after?: unknown;
}

export interface ResourceChange {
  kind: ResourceKind;
  /** metadata.name; for a Machine without one, its memorable name. */
  name: string;
  /** added / removed; changed = some field differs; moved = same content, another file. */
  change: 'added' | 'removed' | 'changed' | 'moved';
  /** The file that declares it at the head (at the base, when removed). */
  file: string;
  /** The file that declared it at the base, when that is another file. */
  previousFile?: string;
  /** changed: every field that differs, in document order of paths. */
  fields?: FieldChange[];
}

export interface FleetDiff {
  changes: ResourceChange[];
  summary: { added: number; changed: number; removed: number; moved: number };
  /** YAML errors in changed files: the documents they hide are missing from that side of the diff. */
  problems: (Diagnostic & { side: 'base' | 'head' })[];
}

interface Resource {
  kind: ResourceKind;
  name: string;
  file: string;
  value: unknown;
}

const KIND_ORDER: Record<ResourceKind, number> = { Machine: 0, Template: 1, Assignment: 2 };

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * How a resource is identified across revisions: a Machine by its boot MAC (the store's key, so a
 * renamed machine is "changed: metadata.name"), anything else by kind and name. Undefined when the
 * document cannot be identified (no kind, no name): it is left out of the diff.
 */
function identify(value: unknown): { key: string; kind: ResourceKind; name: string; value: unknown } | undefined {
  if (!isObject(value)) return undefined;
  const kind = value.kind;
  if (typeof kind !== 'string' || !(RESOURCE_KINDS as readonly string[]).includes(kind)) return undefined;
  const metadata = isObject(value.metadata) ? value.metadata : {};
  const declared = typeof metadata.name === 'string' ? metadata.name : undefined;
  if (kind === 'Machine') {
    const spec = isObject(value.spec) ? value.spec : undefined;
    const rawMac = typeof spec?.mac === 'string' ? spec.mac : undefined;
    const mac = rawMac !== undefined ? normalizeMac(rawMac) : undefined;
    const name = declared ?? (mac ? memorableName(mac) : undefined) ?? rawMac;
    if (!name) return undefined;
    // MACs compare as the loader normalises them: writing one in upper case changes nothing.
    let normalized = value;
    if (spec && mac) {
      const macs = Array.isArray(spec.macs) ? spec.macs.map((m) => (typeof m === 'string' ? (normalizeMac(m) ?? m) : m)) : undefined;
      normalized = { ...value, spec: { ...spec, mac, ...(macs ? { macs } : {}) } };
    }
    return { key: mac ? `Machine mac ${mac}` : `Machine name ${name}`, kind, name, value: normalized };
  }
  if (!declared) return undefined;
  return { key: `${kind} ${declared}`, kind: kind as ResourceKind, name: declared, value };
}

function resourcesIn(files: readonly SourceFile[], side: 'base' | 'head', problems: FleetDiff['problems']): Map<string, Resource> {
  const out = new Map<string, Resource>();
  for (const file of files) {
    const parsed = parseFile(file);
    for (const d of parsed.diagnostics) problems.push({ ...d, side });
    for (const doc of parsed.docs) {
      const id = identify(doc.value);
      // The first declaration wins, as in the loader (a second one is a validation error there).
      if (id && !out.has(id.key)) out.set(id.key, { kind: id.kind, name: id.name, file: file.path, value: id.value });
    }
  }
  return out;
}

const PLAIN_KEY = /^[A-Za-z_][A-Za-z0-9_-]*$/;

function join(path: string, key: string | number): string {
  if (typeof key === 'number') return `${path}[${key}]`;
  const k = PLAIN_KEY.test(key) ? key : `[${JSON.stringify(key)}]`;
  return path === '' ? k : k.startsWith('[') ? `${path}${k}` : `${path}.${k}`;
}

function field(path: string, before: unknown, after: unknown): FieldChange {
  return { path, ...(before !== undefined ? { before } : {}), ...(after !== undefined ? { after } : {}) };
}

/**
 * The fields that differ between two values, as dotted paths (`metadata.labels.rack`,
 * `spec.actions[2].writefile.content`). Mappings are compared key by key; lists of the same length
 * item by item; lists of different lengths keep their common head and tail, and report the items in
 * between as removed (`before` only) and added (`after` only), so inserting one action is one change.
 */
export function diffFields(before: unknown, after: unknown, path = ''): FieldChange[] {
  const out: FieldChange[] = [];
  const walk = (a: unknown, b: unknown, p: string) => {
    if (isDeepStrictEqual(a, b)) return;
    if (isObject(a) && isObject(b)) {
      const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])];
      for (const k of keys) walk(a[k], b[k], join(p, k));
      return;
    }
    if (Array.isArray(a) && Array.isArray(b)) {
      if (a.length === b.length) {
        a.forEach((x, i) => walk(x, b[i], join(p, i)));
        return;
      }
      let head = 0;
      while (head < a.length && head < b.length && isDeepStrictEqual(a[head], b[head])) head++;
      let tail = 0;
      while (tail < a.length - head && tail < b.length - head && isDeepStrictEqual(a[a.length - 1 - tail], b[b.length - 1 - tail])) tail++;
      const midA = a.slice(head, a.length - tail);
      const midB = b.slice(head, b.length - tail);
      // Replaced in place (same count in the middle): compare item by item; else removed, then added.
      if (midA.length === midB.length) midA.forEach((x, i) => walk(x, midB[i], join(p, head + i)));
      else {
        midA.forEach((x, i) => out.push(field(join(p, head + i), x, undefined)));
        midB.forEach((x, i) => out.push(field(join(p, head + i), undefined, x)));
      }
      return;
    }
    out.push(field(p, a, b));
  };
  walk(before, after, path);
  return out;
}

/** Paths present in only one of the lists, or whose text differs. */
function changedFiles(base: readonly SourceFile[], head: readonly SourceFile[]): { base: SourceFile[]; head: SourceFile[] } {
  const b = new Map(base.map((f) => [f.path, f.text]));
  const h = new Map(head.map((f) => [f.path, f.text]));
  return {
    base: base.filter((f) => h.get(f.path) !== f.text),
    head: head.filter((f) => b.get(f.path) !== f.text),
  };
}

/**
 * Resource-level differences between two revisions of a fleet. Only files whose text differs are
 * parsed (a resource in a file that did not change is the same on both sides), so the caller may pass
 * every file of each revision, or only the files that changed (git's changed paths). Documents are
 * compared as parsed values: comments, formatting and key order are not changes.
 */
export function diffResources(base: readonly SourceFile[], head: readonly SourceFile[]): FleetDiff {
  const files = changedFiles(base, head);
  const problems: FleetDiff['problems'] = [];
  const before = resourcesIn(files.base, 'base', problems);
  const after = resourcesIn(files.head, 'head', problems);
  const changes: ResourceChange[] = [];
  for (const [key, a] of after) {
    const b = before.get(key);
    if (!b) {
      changes.push({ kind: a.kind, name: a.name, change: 'added', file: a.file });
      continue;
    }
    const fields = diffFields(b.value, a.value);
    const moved = b.file !== a.file ? { previousFile: b.file } : {};
    if (fields.length > 0) changes.push({ kind: a.kind, name: a.name, change: 'changed', file: a.file, ...moved, fields });
    else if (b.file !== a.file) changes.push({ kind: a.kind, name: a.name, change: 'moved', file: a.file, ...moved });
  }
  for (const [key, b] of before) {
    if (!after.has(key)) changes.push({ kind: b.kind, name: b.name, change: 'removed', file: b.file });
  }
  changes.sort((x, y) => KIND_ORDER[x.kind] - KIND_ORDER[y.kind] || (x.name < y.name ? -1 : x.name > y.name ? 1 : 0));
  const count = (c: ResourceChange['change']) => changes.filter((x) => x.change === c).length;
  return { changes, summary: { added: count('added'), changed: count('changed'), removed: count('removed'), moved: count('moved') }, problems };
}

// -------------------------------------------------------------------------------------------------
// The plan of a branch

export interface BranchPlan {
  /**
   * The head's plan, reduced to what the branch does: its changes that the base's plan does not make
   * identically, and its notes that the base's plan does not have; the summary counts those changes.
   */
  plan: Plan;
  /** Changes the base's plan makes and the head's does not (the branch withdraws them). */
  withdrawn: Change[];
  /** How many of the head's changes the base makes identically (left out: not the branch's doing). */
  unchanged: number;
}

/** A machine has at most one change of each action in a plan. */
function changeKey(c: Change): string {
  return `${c.action} ${c.machine.mac}`;
}

export function summarize(changes: readonly Change[]): Plan['summary'] {
  const count = (actions: Change['action'][]) => changes.filter((c) => actions.includes(c.action)).length;
  return {
    add: count(['register', 'provision']),
    change: count(['update', 'power']),
    reimage: count(['reimage']),
    retire: count(['retire']),
    power: count(['power']),
  };
}

/**
 * What a branch changes in the plan. Both plans must be computed against the same observed state.
 * A change the base makes identically (a machine that is not registered yet on the base too) is not
 * the branch's doing and is left out; a change the base makes differently (another record, another
 * template) is the head's version, shown in full. Without a base plan (the base does not validate),
 * every change of the head is the branch's.
 */
export function branchPlan(base: Plan | undefined, head: Plan): BranchPlan {
  const baseChanges = new Map((base?.changes ?? []).map((c) => [changeKey(c), c]));
  const headKeys = new Set(head.changes.map(changeKey));
  const changes = head.changes.filter((c) => {
    const b = baseChanges.get(changeKey(c));
    return !b || !isDeepStrictEqual(b, c);
  });
  const notes = head.notes.filter((n: Note) => !(base?.notes ?? []).some((b) => isDeepStrictEqual(b, n)));
  const withdrawn = (base?.changes ?? []).filter((c) => !headKeys.has(changeKey(c)));
  const { createdAt, hash: _h, ...rest } = head;
  const body = { ...rest, changes, notes, summary: summarize(changes) };
  return { plan: { ...body, createdAt, hash: planHash(body) }, withdrawn, unchanged: head.changes.length - changes.length };
}

// -------------------------------------------------------------------------------------------------
// What `plan --base --head` reports (its --json output, and what the renderers print)

export interface RevisionInfo {
  /** As given on the command line. */
  ref: string;
  /** Full commit SHA. */
  commit: string;
  /** The fleet at this commit validates. */
  valid: boolean;
}

export interface BranchReview {
  format_version: '1.0';
  base: RevisionInfo;
  head: RevisionInfo;
  /** Folder of the fleet inside the repository ('' = its root); diagnostics' files are relative to it. */
  path: string;
  /** The store revision both plans were computed against. */
  storeRevision: number;
  /** Counts of `changes`. */
  summary: Plan['summary'];
  /** The head's changes that are the branch's doing. */
  changes: Change[];
  /** The head's notes that the base does not have (waiting for discovery, blocked, …). */
  notes: Note[];
  /** Changes the base would make that the head no longer makes. */
  withdrawn: Change[];
  /** Changes the head makes that the base makes identically (not listed). */
  unchanged: number;
  resources: FleetDiff;
  /** The head's diagnostics: its errors when it is invalid (then nothing is planned), else warnings. */
  diagnostics: Diagnostic[];
  /** Number of errors in the base, when it does not validate (then every change of the head is listed). */
  baseErrors?: number;
}

/** The planned part of a review: a branch plan, against store revision `storeRevision`. */
export function reviewOfPlan(bp: BranchPlan, storeRevision: number): Pick<BranchReview, 'storeRevision' | 'summary' | 'changes' | 'notes' | 'withdrawn' | 'unchanged'> {
  return { storeRevision, summary: bp.plan.summary, changes: bp.plan.changes, notes: bp.plan.notes, withdrawn: bp.withdrawn, unchanged: bp.unchanged };
}

/** True when the branch changes what apply would do. */
export function reviewHasChanges(r: BranchReview): boolean {
  return r.changes.length > 0 || r.withdrawn.length > 0;
}
