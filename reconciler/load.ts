// Load a fleet: parse every file, validate every document, resolve references. Pure over file texts;
// collects every problem instead of stopping at the first.
import { createHash } from 'node:crypto';
import { validateAgainst, type SchemaName } from '../schemas/validate.js';
import { normalizeMac } from '../schemas/mac.js';
import { memorableName } from '../schemas/memorable-name.js';
import type { Assignment, Machine, Template } from '../schemas/types.js';
import { byPosition, diagnostic, fieldPath, formatPosition, type Diagnostic, type Position } from './diagnostics.js';
import { parseFile, type ParsedDoc, type SourceFile } from './parse.js';
import { schemaDiagnostics } from './schema-errors.js';
import { findVariables, isKnownVariable, labelOf, stringsIn } from './variables.js';
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
  for (const f of [...files].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) {
    h.update(f.path).update('\0').update(f.text).update('\0');
  }
  return 'sha256:' + h.digest('hex');
}

interface Typed<T> {
  doc: ParsedDoc;
  value: T;
}

export interface LoadOptions {
  revision?: string;
  /** Called as files are parsed (for progress bars at the edge; loading itself stays pure). */
  onProgress?: (done: number, total: number) => void;
}

export function loadFleet(files: readonly SourceFile[], options: LoadOptions = {}): LoadResult {
  const revision = options.revision ?? contentRevision(files);
  const diagnostics: Diagnostic[] = [];
  const machines: Typed<Machine>[] = [];
  const templates: Typed<Template>[] = [];
  const assignments: Typed<Assignment>[] = [];
  // What exists even if it failed validation, so that one broken document does not also make every
  // reference to it an error; `incomplete` when some document could not even be classified.
  const declared = { Machine: new Set<string>(), Template: new Set<string>(), Assignment: new Set<string>() };
  let incomplete = false;

  // 1. Parse and check each document on its own.
  const sorted = [...files].sort((a, b) => (a.path < b.path ? -1 : 1));
  for (const [i, file] of sorted.entries()) {
    if (options.onProgress && i % 256 === 0) options.onProgress(i, sorted.length);
    const parsed = parseFile(file);
    diagnostics.push(...parsed.diagnostics);
    if (parsed.diagnostics.length > 0) incomplete = true;
    for (const doc of parsed.docs) {
      const v = doc.value;
      if (v === null || typeof v !== 'object' || Array.isArray(v)) {
        const what = v === null ? 'empty (null)' : Array.isArray(v) ? 'a list' : `a ${typeof v}`;
        diagnostics.push(diagnostic('DF_ERR_NOT_A_MAPPING', doc.at([]), `document ${doc.index + 1} is ${what}, not a mapping`));
        incomplete = true;
        continue;
      }
      const { apiVersion, kind } = v as Record<string, unknown>;
      if (apiVersion !== API_VERSION) {
        const at = apiVersion === undefined ? doc.at([]) : doc.at(['apiVersion']);
        const what = apiVersion === undefined ? 'missing apiVersion' : `unknown apiVersion ${JSON.stringify(apiVersion)}`;
        diagnostics.push(diagnostic('DF_ERR_API_VERSION', at, what, { field: 'apiVersion' }));
        incomplete = true;
        continue;
      }
      const schema = typeof kind === 'string' ? KINDS[kind] : undefined;
      if (!schema) {
        const at = kind === undefined ? doc.at([]) : doc.at(['kind']);
        const what = kind === undefined ? 'missing kind' : `unknown kind ${JSON.stringify(kind)}`;
        diagnostics.push(diagnostic('DF_ERR_KIND', at, what, { field: 'kind' }));
        incomplete = true;
        continue;
      }
      const name = declaredName(kind as keyof typeof declared, v as Record<string, unknown>);
      if (name) declared[kind as keyof typeof declared].add(name);
      else incomplete = true; // a nameless document could be the one a reference means
      const errors = validateAgainst(schema, v);
      if (errors.length > 0) {
        diagnostics.push(...schemaDiagnostics(doc, errors));
        continue;
      }
      if (kind === 'Machine') machines.push({ doc, value: v as Machine });
      else if (kind === 'Template') templates.push({ doc, value: v as Template });
      else assignments.push({ doc, value: v as Assignment });
    }
  }
  if (files.length === 0 || (machines.length + templates.length + assignments.length === 0 && diagnostics.length === 0)) {
    diagnostics.push(diagnostic('DF_ERR_EMPTY_FLEET', { file: '.', line: 1, col: 1 }, 'no Machine, Template or Assignment found'));
  }

  options.onProgress?.(sorted.length, sorted.length);

  // 2. Resolve across documents.
  const fleetMachines = resolveMachines(machines, diagnostics);
  const fleetTemplates = resolveTemplates(templates, diagnostics);
  const known = (kind: keyof typeof declared, name: string) => incomplete || declared[kind].has(name);
  const fleetAssignments = resolveAssignments(assignments, fleetMachines, fleetTemplates, known, diagnostics);
  checkTemplateVariables(templates, fleetAssignments, fleetMachines, diagnostics);

  diagnostics.sort(byPosition);
  if (diagnostics.some((d) => d.severity === 'error')) return { diagnostics };
  return {
    fleet: { revision, machines: fleetMachines, templates: fleetTemplates, assignments: fleetAssignments },
    diagnostics,
  };
}

/** The name a document declares, read before validation (it may be invalid). */
function declaredName(kind: string, v: Record<string, unknown>): string | undefined {
  const name = (v.metadata as { name?: unknown } | undefined)?.name;
  if (typeof name === 'string') return name;
  const mac = (v.spec as { mac?: unknown } | undefined)?.mac;
  return kind === 'Machine' && typeof mac === 'string' ? memorableName(mac) : undefined;
}

function resolveMachines(machines: Typed<Machine>[], out: Diagnostic[]): FleetMachine[] {
  // Positions are computed only when a message needs them: most fleets are valid.
  const byMac = new Map<string, () => Position>();
  const byName = new Map<string, () => Position>();
  const result: FleetMachine[] = [];
  for (const { doc, value } of machines) {
    const mac = normalizeMac(value.spec.mac)!;
    const memorable = memorableName(mac)!;
    const name = value.metadata?.name ?? memorable;
    const nameAt = () => (value.metadata?.name ? doc.at(['metadata', 'name']) : doc.at(['spec', 'mac']));
    const macs = (value.spec.macs ?? []).map((m) => normalizeMac(m)!);
    let ok = true;
    [mac, ...macs].forEach((m, i) => {
      const path = i === 0 ? ['spec', 'mac'] : ['spec', 'macs', i - 1];
      const first = byMac.get(m);
      if (first) {
        out.push(
          diagnostic('DF_ERR_DUPLICATE_MAC', doc.at(path), `MAC ${m} is already declared at ${formatPosition(first())}`, {
            field: fieldPath(path),
          }),
        );
        ok = false;
      } else byMac.set(m, () => doc.at(path));
    });
    const firstName = byName.get(name);
    if (firstName) {
      out.push(
        diagnostic('DF_ERR_DUPLICATE_NAME', nameAt(), `Machine "${name}" is already declared at ${formatPosition(firstName())}`, {
          field: 'metadata.name',
          ...(value.metadata?.name ? {} : { hint: 'two machines share a memorable name: give one of them metadata.name' }),
        }),
      );
      ok = false;
    } else byName.set(name, nameAt);
    if (!ok) continue;
    result.push({
      name,
      mac,
      memorableName: memorable,
      labels: value.metadata?.labels ?? {},
      spec: { ...value.spec, mac, ...(value.spec.macs ? { macs } : {}) },
      file: doc.file,
    });
  }
  return result;
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

function resolveTemplates(templates: Typed<Template>[], out: Diagnostic[]): Map<string, FleetTemplate> {
  const result = new Map<string, FleetTemplate>();
  const firstAt = new Map<string, ParsedDoc>();
  for (const { doc, value } of templates) {
    const name = value.metadata.name!;
    if (isDuplicate('Template', name, doc, firstAt, out)) continue;
    checkTemplateShape(doc, value, out);
    result.set(name, { name, spec: value.spec, file: doc.file });
  }
  return result;
}

/** Checks the schema cannot express: 'rest' only last, partition numbers that exist, image2disk needs an image. */
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
  assignments: Typed<Assignment>[],
  machines: FleetMachine[],
  templates: Map<string, FleetTemplate>,
  known: (kind: 'Machine' | 'Template', name: string) => boolean,
  out: Diagnostic[],
): Map<string, FleetAssignment> {
  const result = new Map<string, FleetAssignment>();
  const machinesByName = new Map(machines.map((m) => [m.name, m]));
  const claimedBy = new Map<string, { assignment: string; at: () => Position }>();
  const firstAt = new Map<string, ParsedDoc>();
  // Selectors are label equalities: index machines by each key=value once instead of scanning per assignment.
  const byLabel = new Map<string, FleetMachine[]>();
  for (const m of machines) {
    for (const [k, v] of Object.entries(m.labels)) {
      const key = `${k}=${v}`;
      const list = byLabel.get(key);
      if (list) list.push(m);
      else byLabel.set(key, [m]);
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
    // Which machines does it match, and where in the file is each match written?
    const matched: { machine: FleetMachine; at: () => Position }[] = [];
    if (spec.machines) {
      spec.machines.forEach((machineName, i) => {
        const m = machinesByName.get(machineName);
        const at = () => doc.at(['spec', 'machines', i]);
        if (m) matched.push({ machine: m, at });
        else if (!known('Machine', machineName)) {
          out.push(diagnostic('DF_ERR_MISSING_MACHINE', at(), `machine "${machineName}" does not exist`, { field: `spec.machines[${i}]` }));
        }
      });
    } else if (spec.selector) {
      const entries = Object.entries(spec.selector);
      const at = () => doc.at(['spec', 'selector']);
      const [k0, v0] = entries[0]!;
      for (const m of byLabel.get(`${k0}=${v0}`) ?? []) {
        if (entries.every(([k, v]) => m.labels[k] === v)) matched.push({ machine: m, at });
      }
      if (matched.length === 0 && !known('Machine', '')) {
        out.push(diagnostic('DF_WARN_EMPTY_SELECTOR', at(), `selector ${JSON.stringify(spec.selector)} matches no machine`, { field: 'spec.selector' }));
      }
    }
    const names: string[] = [];
    // One error per pair of overlapping assignments, naming the machines they share.
    const overlaps = new Map<string, { machines: string[]; at: () => Position; other: () => Position }>();
    for (const { machine, at } of matched) {
      const claim = claimedBy.get(machine.name);
      if (claim) {
        const o = overlaps.get(claim.assignment) ?? { machines: [], at, other: claim.at };
        o.machines.push(machine.name);
        overlaps.set(claim.assignment, o);
        continue;
      }
      claimedBy.set(machine.name, { assignment: name, at });
      machine.assignment = name;
      names.push(machine.name);
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
  return result;
}

/** Unknown variables are errors; a ${machine.labels.KEY} that an assigned machine lacks is an error too. */
function checkTemplateVariables(
  templates: Typed<Template>[],
  assignments: Map<string, FleetAssignment>,
  machines: FleetMachine[],
  out: Diagnostic[],
): void {
  const byName = new Map(machines.map((m) => [m.name, m]));
  for (const { doc, value } of templates) {
    const users = [...assignments.values()].filter((a) => a.template === value.metadata.name);
    for (const [text, rel] of stringsIn(value.spec.actions, ['spec', 'actions'])) {
      for (const ref of findVariables(text)) {
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
        for (const a of users) {
          const lacking = a.machines.filter((n) => byName.get(n)?.labels[label] === undefined);
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
