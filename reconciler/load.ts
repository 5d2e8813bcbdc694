// Load a fleet: parse every file, validate every document, resolve references. Pure over file texts;
// collects every problem instead of stopping at the first.
//
// Two phases. The per-file phase (checkFile: parse, classify, schema-validate, and what resolving needs
// from each document) depends on one file's path and text only, so FleetLoader keeps its result for a
// file whose text did not change. The resolve phase (resolveFleet: duplicates, references, assignments,
// template variables) runs over every document each time; it is written to be cheap on a valid fleet
// (positions, declared-name sets and closures are made only when a diagnostic needs them).
import { createHash } from 'node:crypto';
import { validateAgainst, type SchemaName } from '../schemas/validate.js';
import { normalizeMac } from '../schemas/mac.js';
import { memorableName } from '../schemas/memorable-name.js';
import type { Assignment, Machine, Template } from '../schemas/types.js';
import { byPosition, diagnostic, fieldPath, formatPosition, type Diagnostic, type Position } from './diagnostics.js';
import { parseFile, type ParsedDoc, type SourceFile } from './parse.js';
import { schemaDiagnostics } from './schema-errors.js';
import { findVariables, isKnownVariable, labelOf, stringsIn, type VariableRef } from './variables.js';
import type { Fleet, FleetAssignment, FleetMachine, FleetTemplate } from './fleet.js';

export const API_VERSION = 'dragonfly.computer/v1';
const KINDS: Record<string, SchemaName> = { Machine: 'machine', Template: 'template', Assignment: 'assignment' };

export interface LoadResult {
  /** Present only when there are no errors (warnings allowed). */
  fleet?: Fleet;
  diagnostics: Diagnostic[];
}

/** Content revision of a fleet directory: sha256 over every file's path and bytes, in path order. */
export function contentRevision(files: readonly SourceFile[]): string {
  const h = createHash('sha256');
  // One update per file: the same bytes as updating path, NUL, text and NUL apart, in fewer calls.
  for (const f of sortedByPath(files)) h.update(f.path + '\0' + f.text + '\0');
  return 'sha256:' + h.digest('hex');
}

const byPath = (a: SourceFile, b: SourceFile) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0);

/** Files in path order. Sources list them sorted already: check that before copying and sorting. */
function sortedByPath(files: readonly SourceFile[]): readonly SourceFile[] {
  for (let i = 1; i < files.length; i++) if (!(files[i - 1]!.path < files[i]!.path)) return [...files].sort(byPath);
  return files;
}

export interface LoadOptions {
  revision?: string;
  /** Called as files are parsed (for progress bars at the edge; loading itself stays pure). */
  onProgress?: (done: number, total: number) => void;
}

export function loadFleet(files: readonly SourceFile[], options: LoadOptions = {}): LoadResult {
  return new FleetLoader().load(files, options);
}

/**
 * Loads successive revisions of one fleet (the controller's loop). The per-file phase is kept for each
 * path with its exact text, so a revision that changes one file parses and validates one file; the
 * resolve phase runs in full. Results are equal to loadFleet's. Fleets loaded by one FleetLoader share
 * the objects of unchanged documents (machine specs and labels, template specs): treat a Fleet as
 * read-only, as the planner does.
 */
export class FleetLoader {
  private readonly files = new Map<string, { text: string; check: FileCheck; seen: number }>();
  private loads = 0;

  load(files: readonly SourceFile[], options: LoadOptions = {}): LoadResult {
    const revision = options.revision ?? contentRevision(files);
    const sorted = sortedByPath(files);
    const stamp = ++this.loads;
    const checks: FileCheck[] = new Array(sorted.length);
    for (let i = 0; i < sorted.length; i++) {
      const file = sorted[i]!;
      if (options.onProgress && i % 256 === 0) options.onProgress(i, sorted.length);
      let entry = this.files.get(file.path);
      if (!entry || entry.text !== file.text) {
        entry = { text: file.text, check: checkFile(file), seen: stamp };
        this.files.set(file.path, entry);
      } else entry.seen = stamp;
      checks[i] = entry.check;
    }
    // Keep the files of this revision only: memory stays that of one fleet.
    if (this.files.size > sorted.length) for (const [p, e] of this.files) if (e.seen !== stamp) this.files.delete(p);
    options.onProgress?.(sorted.length, sorted.length);
    return resolveFleet(checks, files.length, revision);
  }
}

// -------------------------------------------------------------------------------------------------
// 1. The per-file phase

interface Typed<T> {
  doc: ParsedDoc;
  value: T;
}

/** A valid Machine document and what resolving it needs. */
interface MachineDoc extends Typed<Machine> {
  mac: string;
  memorable: string;
  name: string;
  macs: string[];
  /** Become FleetMachine.spec and .labels (shared by the Fleets of one FleetLoader: read-only). */
  spec: Machine['spec'];
  labels: Record<string, string>;
}

/** A valid Template document, its shape problems and its variable references (positions made lazily). */
interface TemplateDoc extends Typed<Template> {
  shape: Diagnostic[];
  variables: { rel: (string | number)[]; refs: VariableRef[] }[];
}

type Kind = 'Machine' | 'Template' | 'Assignment';

/** What one file contributes; depends on its path and text only. Never modified once made. */
interface FileCheck {
  diagnostics: Diagnostic[];
  /** Some document could not be classified or named (then a reference to an unknown name is no error). */
  incomplete: boolean;
  /** Names declared by documents of a known kind, valid or not. */
  declared: [Kind, string][];
  machines: MachineDoc[];
  templates: TemplateDoc[];
  assignments: Typed<Assignment>[];
}

/** The empty list of a FileCheck with nothing of a kind (most files declare one document). */
const NONE: never[] = Object.freeze([]) as never[];

function checkFile(file: SourceFile): FileCheck {
  const out: FileCheck = { diagnostics: NONE, incomplete: false, declared: NONE, machines: NONE, templates: NONE, assignments: NONE };
  const push = <K extends 'diagnostics' | 'declared' | 'machines' | 'templates' | 'assignments'>(key: K, ...items: FileCheck[K]) => {
    if (out[key] === NONE) out[key] = [] as unknown as FileCheck[K];
    (out[key] as unknown[]).push(...items);
  };
  const parsed = parseFile(file);
  if (parsed.diagnostics.length > 0) {
    push('diagnostics', ...parsed.diagnostics);
    out.incomplete = true;
  }
  for (const doc of parsed.docs) {
    const v = doc.value;
    if (v === null || typeof v !== 'object' || Array.isArray(v)) {
      const what = v === null ? 'empty (null)' : Array.isArray(v) ? 'a list' : `a ${typeof v}`;
      push('diagnostics', diagnostic('DF_ERR_NOT_A_MAPPING', doc.at([]), `document ${doc.index + 1} is ${what}, not a mapping`));
      out.incomplete = true;
      continue;
    }
    const { apiVersion, kind } = v as Record<string, unknown>;
    if (apiVersion !== API_VERSION) {
      const at = apiVersion === undefined ? doc.at([]) : doc.at(['apiVersion']);
      const what = apiVersion === undefined ? 'missing apiVersion' : `unknown apiVersion ${JSON.stringify(apiVersion)}`;
      push('diagnostics', diagnostic('DF_ERR_API_VERSION', at, what, { field: 'apiVersion' }));
      out.incomplete = true;
      continue;
    }
    const schema = typeof kind === 'string' ? KINDS[kind] : undefined;
    if (!schema) {
      const at = kind === undefined ? doc.at([]) : doc.at(['kind']);
      const what = kind === undefined ? 'missing kind' : `unknown kind ${JSON.stringify(kind)}`;
      push('diagnostics', diagnostic('DF_ERR_KIND', at, what, { field: 'kind' }));
      out.incomplete = true;
      continue;
    }
    const name = declaredName(kind as Kind, v as Record<string, unknown>);
    if (name) push('declared', [kind as Kind, name]);
    else out.incomplete = true; // a nameless document could be the one a reference means
    const errors = validateAgainst(schema, v);
    if (errors.length > 0) {
      push('diagnostics', ...schemaDiagnostics(doc, errors));
      continue;
    }
    if (kind === 'Machine') push('machines', machineDoc(doc, v as Machine));
    else if (kind === 'Template') push('templates', templateDoc(doc, v as Template));
    else push('assignments', { doc, value: v as Assignment });
  }
  return out;
}

/** The name a document declares, read before validation (it may be invalid). */
function declaredName(kind: string, v: Record<string, unknown>): string | undefined {
  const name = (v.metadata as { name?: unknown } | undefined)?.name;
  if (typeof name === 'string') return name;
  const mac = (v.spec as { mac?: unknown } | undefined)?.mac;
  return kind === 'Machine' && typeof mac === 'string' ? memorableName(mac) : undefined;
}

function machineDoc(doc: ParsedDoc, value: Machine): MachineDoc {
  const mac = normalizeMac(value.spec.mac)!;
  const memorable = memorableName(mac)!;
  const macs = (value.spec.macs ?? []).map((m) => normalizeMac(m)!);
  return {
    doc,
    value,
    mac,
    memorable,
    name: value.metadata?.name ?? memorable,
    macs,
    spec: { ...value.spec, mac, ...(value.spec.macs ? { macs } : {}) },
    labels: value.metadata?.labels ?? {},
  };
}

function templateDoc(doc: ParsedDoc, value: Template): TemplateDoc {
  const shape: Diagnostic[] = [];
  checkTemplateShape(doc, value, shape);
  const variables: TemplateDoc['variables'] = [];
  for (const [text, rel] of stringsIn(value.spec.actions, ['spec', 'actions'])) {
    const refs = findVariables(text);
    if (refs.length > 0) variables.push({ rel, refs });
  }
  return { doc, value, shape, variables };
}

// -------------------------------------------------------------------------------------------------
// 2. The resolve phase

function resolveFleet(checks: readonly FileCheck[], fileCount: number, revision: string): LoadResult {
  const diagnostics: Diagnostic[] = [];
  const machines: MachineDoc[] = [];
  const templates: TemplateDoc[] = [];
  const assignments: Typed<Assignment>[] = [];
  let incomplete = false;
  for (const c of checks) {
    // FileChecks are kept between loads: hand out copies of their diagnostics.
    for (const d of c.diagnostics) diagnostics.push({ ...d });
    if (c.incomplete) incomplete = true;
    for (const m of c.machines) machines.push(m);
    for (const t of c.templates) templates.push(t);
    for (const a of c.assignments) assignments.push(a);
  }
  if (fileCount === 0 || (machines.length + templates.length + assignments.length === 0 && diagnostics.length === 0)) {
    diagnostics.push(diagnostic('DF_ERR_EMPTY_FLEET', { file: '.', line: 1, col: 1 }, 'no Machine, Template or Assignment found'));
  }

  // What exists even if it failed validation, so that one broken document does not also make every
  // reference to it an error; everything may exist when some document could not even be classified.
  // Consulted only for a reference that resolves to nothing, so collected only then.
  let declared: Record<Kind, Set<string>> | undefined;
  const known = (kind: Kind, name: string): boolean => {
    if (incomplete) return true;
    if (!declared) {
      declared = { Machine: new Set(), Template: new Set(), Assignment: new Set() };
      for (const c of checks) for (const [k, n] of c.declared) declared[k].add(n);
    }
    return declared[kind].has(name);
  };

  const resolved = resolveMachines(machines, diagnostics);
  const fleetTemplates = resolveTemplates(templates, diagnostics);
  const { result: fleetAssignments, assignmentOf, members } = resolveAssignments(assignments, machines, resolved, fleetTemplates, known, diagnostics);
  checkTemplateVariables(templates, fleetAssignments, members, machines, diagnostics);

  diagnostics.sort(byPosition);
  if (diagnostics.some((d) => d.severity === 'error')) return { diagnostics };
  const fleetMachines: FleetMachine[] = new Array(resolved.accepted.length);
  for (let j = 0; j < resolved.accepted.length; j++) {
    const i = resolved.accepted[j]!;
    const { name, mac, memorable, labels, spec, doc } = machines[i]!;
    const assignment = assignmentOf[i];
    fleetMachines[j] =
      assignment === undefined
        ? { name, mac, memorableName: memorable, labels, spec, file: doc.file }
        : { name, mac, memorableName: memorable, labels, spec, file: doc.file, assignment };
  }
  return {
    fleet: { revision, machines: fleetMachines, templates: fleetTemplates, assignments: fleetAssignments },
    diagnostics,
  };
}

/** Machines that resolve: indices into the machine documents, and the first document of each name. */
interface ResolvedMachines {
  /** Indices of the machines without a duplicate MAC or name, in fleet order. */
  accepted: number[];
  /** Name → index of its first document; that document is accepted unless `rejected` says otherwise. */
  byName: Map<string, number>;
  rejected: Set<number>;
}

function resolveMachines(machines: readonly MachineDoc[], out: Diagnostic[]): ResolvedMachines {
  // Positions are computed only when a message needs them: most fleets are valid.
  const byMac = new Map<string, number>();
  const byName = new Map<string, number>();
  const accepted: number[] = [];
  const rejected = new Set<number>();
  const macAt = (m: MachineDoc, mac: string): (string | number)[] => {
    const i = m.mac === mac ? -1 : m.macs.indexOf(mac);
    return i < 0 ? ['spec', 'mac'] : ['spec', 'macs', i];
  };
  const nameAt = (m: MachineDoc): Position => (m.value.metadata?.name ? m.doc.at(['metadata', 'name']) : m.doc.at(['spec', 'mac']));
  for (let idx = 0; idx < machines.length; idx++) {
    const m = machines[idx]!;
    let ok = true;
    for (let i = 0; i <= m.macs.length; i++) {
      const mac = i === 0 ? m.mac : m.macs[i - 1]!;
      const first = byMac.get(mac);
      if (first !== undefined) {
        const path = i === 0 ? ['spec', 'mac'] : ['spec', 'macs', i - 1];
        const firstDoc = machines[first]!;
        out.push(
          diagnostic('DF_ERR_DUPLICATE_MAC', m.doc.at(path), `MAC ${mac} is already declared at ${formatPosition(firstDoc.doc.at(macAt(firstDoc, mac)))}`, {
            field: fieldPath(path),
          }),
        );
        ok = false;
      } else byMac.set(mac, idx);
    }
    const firstName = byName.get(m.name);
    if (firstName !== undefined) {
      out.push(
        diagnostic('DF_ERR_DUPLICATE_NAME', nameAt(m), `Machine "${m.name}" is already declared at ${formatPosition(nameAt(machines[firstName]!))}`, {
          field: 'metadata.name',
          ...(m.value.metadata?.name ? {} : { hint: 'two machines share a memorable name: give one of them metadata.name' }),
        }),
      );
      ok = false;
    } else byName.set(m.name, idx);
    if (ok) accepted.push(idx);
    else rejected.add(idx);
  }
  return { accepted, byName, rejected };
}

/** Report a second Template/Assignment of the same name, pointing at the first; remember the first. */
function isDuplicate(kind: string, name: string, doc: ParsedDoc, firstAt: Map<string, ParsedDoc>, out: Diagnostic[]): boolean {
  const first = firstAt.get(name);
  if (!first) {
    firstAt.set(name, doc);
    return false;
  }
  const where = formatPosition(first.at(['metadata', 'name']));
  out.push(diagnostic('DF_ERR_DUPLICATE_NAME', doc.at(['metadata', 'name']), `${kind} "${name}" is already declared at ${where}`, { field: 'metadata.name' }));
  return true;
}

function resolveTemplates(templates: readonly TemplateDoc[], out: Diagnostic[]): Map<string, FleetTemplate> {
  const result = new Map<string, FleetTemplate>();
  const firstAt = new Map<string, ParsedDoc>();
  for (const { doc, value, shape } of templates) {
    const name = value.metadata.name!;
    if (isDuplicate('Template', name, doc, firstAt, out)) continue;
    for (const d of shape) out.push({ ...d });
    result.set(name, { name, spec: value.spec, file: doc.file });
  }
  return result;
}

function checkTemplateShape(doc: ParsedDoc, value: Template, out: Diagnostic[]): void {
  // Partition numbers refer to the layout written by the last partition action before them.
  let partitionCount: number | undefined;
  value.spec.actions.forEach((action, i) => {
    const [name, params] = Object.entries(action)[0] as [string, { partition?: number; disk?: string }];
    if (action.partition) {
      const parts = action.partition.partitions;
      partitionCount = parts.length;
      parts.forEach((p, j) => {
        if (p.size === 'rest' && j !== parts.length - 1) {
          const path = ['spec', 'actions', i, 'partition', 'partitions', j, 'size'];
          out.push(
            diagnostic('DF_ERR_PARTITION_LAYOUT', doc.at(path), `partition ${j + 1} uses size 'rest' but is not the last partition`, {
              field: fieldPath(path),
            }),
          );
        }
      });
      if (action.partition.table === 'mbr' && parts.length > 4) {
        const path = ['spec', 'actions', i, 'partition', 'partitions', 4];
        out.push(
          diagnostic('DF_ERR_PARTITION_LAYOUT', doc.at(path), `an MBR table holds at most 4 primary partitions; this layout has ${parts.length}`, {
            field: fieldPath(path),
            hint: 'use table: gpt, or at most 4 partitions',
          }),
        );
      }
    }
    if (name === 'image2disk' && !value.spec.image) {
      out.push(
        diagnostic('DF_ERR_NO_IMAGE', doc.keyAt(['spec', 'actions', i], 'image2disk'), `image2disk in template "${value.metadata.name}" has no spec.image to write`, {
          field: `spec.actions[${i}].image2disk`,
        }),
      );
    }
    if (name !== 'partition' && params.partition !== undefined && partitionCount !== undefined && params.partition > partitionCount) {
      const path = ['spec', 'actions', i, name, 'partition'];
      out.push(
        diagnostic('DF_ERR_PARTITION_LAYOUT', doc.at(path), `${name} uses partition ${params.partition}, but the layout above has ${partitionCount}`, {
          field: fieldPath(path),
        }),
      );
    }
    // A whole-disk image brings its own partition table, which the template cannot know.
    if (name === 'image2disk' && params.disk !== undefined) partitionCount = undefined;
  });
  // Variables are substituted in actions only (and ${server.url} at the start of spec.image.url, which the
  // boot server fills in); anywhere else a `${` would reach Mage verbatim.
  const { actions: _a, ...rest } = value.spec;
  for (const [text, rel] of stringsIn(rest, ['spec'])) {
    const serverImage = fieldPath(rel) === 'spec.image.url' && text.startsWith('${server.url}/');
    if (findVariables(serverImage ? text.slice('${server.url}'.length) : text).length > 0) {
      out.push(
        diagnostic('DF_ERR_UNKNOWN_VARIABLE', doc.at(rel), `${fieldPath(rel)}: variables are substituted only inside spec.actions`, {
          field: fieldPath(rel),
          hint: 'write the value literally, or move it into an action',
        }),
      );
    }
  }
}


function resolveAssignments(
  assignments: readonly Typed<Assignment>[],
  machines: readonly MachineDoc[],
  resolved: ResolvedMachines,
  templates: Map<string, FleetTemplate>,
  known: (kind: 'Machine' | 'Template', name: string) => boolean,
  out: Diagnostic[],
): { result: Map<string, FleetAssignment>; assignmentOf: (string | undefined)[]; members: Map<string, number[]> } {
  const result = new Map<string, FleetAssignment>();
  const members = new Map<string, number[]>();
  // Per machine document (by index): the assignment that claimed it, and where that claim is written.
  const assignmentOf: (string | undefined)[] = new Array(machines.length);
  const claimAt: (() => Position)[] = new Array(machines.length);
  const firstAt = new Map<string, ParsedDoc>();
  // Selectors are label equalities: index the machines by the first key of each selector, once.
  const byLabel = new Map<string, Map<string, number[]>>();
  for (const { value } of assignments) {
    const first = value.spec.selector ? Object.keys(value.spec.selector)[0] : undefined;
    if (first !== undefined && !byLabel.has(first)) byLabel.set(first, new Map());
  }
  if (byLabel.size > 0) {
    for (const i of resolved.accepted) {
      const labels = machines[i]!.labels;
      for (const [key, index] of byLabel) {
        if (!Object.prototype.hasOwnProperty.call(labels, key)) continue;
        const v = labels[key]!;
        const list = index.get(v);
        if (list) list.push(i);
        else index.set(v, [i]);
      }
    }
  }
  for (const { doc, value } of assignments) {
    const name = value.metadata.name!;
    if (isDuplicate('Assignment', name, doc, firstAt, out)) continue;
    const spec = value.spec;
    // A template that exists but failed validation has its own error; do not add a second one here.
    if (!templates.has(spec.template) && !known('Template', spec.template)) {
      const suggestion = [...templates.keys()].find((t) => t.startsWith(spec.template.slice(0, 3)));
      out.push(
        diagnostic('DF_ERR_MISSING_TEMPLATE', doc.at(['spec', 'template']), `template "${spec.template}" does not exist`, {
          field: 'spec.template',
          hint: `add a Template named "${spec.template}" or fix the name${suggestion ? ` (did you mean "${suggestion}"?)` : ''}; templates: ${[...templates.keys()].join(', ') || 'none'}`,
        }),
      );
    }
    const names: string[] = [];
    const mine: number[] = [];
    // One error per pair of overlapping assignments, naming the machines they share.
    const overlaps = new Map<string, { machines: string[]; at: () => Position; other: () => Position }>();
    const claim = (i: number, at: () => Position) => {
      const m = machines[i]!;
      const other = assignmentOf[i];
      if (other !== undefined) {
        const o = overlaps.get(other) ?? { machines: [], at, other: claimAt[i]! };
        o.machines.push(m.name);
        overlaps.set(other, o);
        return;
      }
      assignmentOf[i] = name;
      claimAt[i] = at;
      names.push(m.name);
      mine.push(i);
    };
    // Which machines does it match, and where in the file is each match written?
    if (spec.machines) {
      const matched: [number, () => Position][] = [];
      spec.machines.forEach((machineName, j) => {
        const i = resolved.byName.get(machineName);
        const at = () => doc.at(['spec', 'machines', j]);
        if (i !== undefined && !resolved.rejected.has(i)) matched.push([i, at]);
        else if (!known('Machine', machineName)) {
          out.push(diagnostic('DF_ERR_MISSING_MACHINE', at(), `machine "${machineName}" does not exist`, { field: `spec.machines[${j}]` }));
        }
      });
      for (const [i, at] of matched) claim(i, at);
    } else if (spec.selector) {
      const entries = Object.entries(spec.selector);
      const at = () => doc.at(['spec', 'selector']);
      const [k0, v0] = entries[0]!;
      let matched = 0;
      for (const i of byLabel.get(k0)?.get(v0) ?? NONE) {
        const labels = machines[i]!.labels;
        if (entries.every(([k, v]) => labels[k] === v)) {
          matched++;
          claim(i, at);
        }
      }
      if (matched === 0 && !known('Machine', '')) {
        out.push(diagnostic('DF_WARN_EMPTY_SELECTOR', at(), `selector ${JSON.stringify(spec.selector)} matches no machine`, { field: 'spec.selector' }));
      }
    }
    for (const [other, o] of overlaps) {
      const list = o.machines.slice(0, 5).join(', ') + (o.machines.length > 5 ? ` and ${o.machines.length - 5} more` : '');
      out.push(
        diagnostic(
          'DF_ERR_DOUBLE_ASSIGNMENT',
          o.at(),
          `machine${o.machines.length > 1 ? 's' : ''} ${list} ${o.machines.length > 1 ? 'are' : 'is'} also matched by assignment "${other}" (${formatPosition(o.other())})`,
          { field: spec.machines ? 'spec.machines' : 'spec.selector' },
        ),
      );
    }
    members.set(name, mine);
    result.set(name, {
      name,
      template: spec.template,
      generation: spec.generation ?? 1,
      ...(spec.rollout?.maxParallel !== undefined ? { maxParallel: spec.rollout.maxParallel } : {}),
      ...(spec.rollout?.maxFailures !== undefined ? { maxFailures: spec.rollout.maxFailures } : {}),
      machines: names,
      file: doc.file,
    });
  }
  return { result, assignmentOf, members };
}

/** Unknown variables are errors; a ${machine.labels.KEY} that an assigned machine lacks is an error too. */
function checkTemplateVariables(
  templates: readonly TemplateDoc[],
  assignments: Map<string, FleetAssignment>,
  members: Map<string, number[]>,
  machines: readonly MachineDoc[],
  out: Diagnostic[],
): void {
  for (const { doc, value, variables } of templates) {
    let users: FleetAssignment[] | undefined;
    for (const { rel, refs } of variables) {
      for (const ref of refs) {
        // The position of the `${` itself (inside a quoted or block scalar too), computed only for errors.
        const at = () => {
          const src = doc.sourceOf(rel);
          const idx = src ? src.text.indexOf('${' + ref.expr) : -1;
          return src && idx >= 0 ? doc.positionOfOffset(src.offset + idx) : doc.at(rel);
        };
        if (!isKnownVariable(ref.expr)) {
          out.push(diagnostic('DF_ERR_UNKNOWN_VARIABLE', at(), `unknown variable \${${ref.expr}}`, { field: fieldPath(rel) }));
          continue;
        }
        const label = labelOf(ref.expr);
        if (label === undefined) continue;
        users ??= [...assignments.values()].filter((a) => a.template === value.metadata.name);
        for (const a of users) {
          const lacking: string[] = [];
          for (const i of members.get(a.name) ?? NONE) if (machines[i]!.labels[label] === undefined) lacking.push(machines[i]!.name);
          if (lacking.length > 0) {
            out.push(
              diagnostic(
                'DF_ERR_MISSING_LABEL',
                at(),
                `\${${ref.expr}}: machine${lacking.length > 1 ? 's' : ''} ${lacking.slice(0, 5).join(', ')}${lacking.length > 5 ? ', …' : ''} (assignment "${a.name}") ha${lacking.length > 1 ? 've' : 's'} no label "${label}"`,
                { field: fieldPath(rel) },
              ),
            );
          }
        }
      }
    }
  }
}
