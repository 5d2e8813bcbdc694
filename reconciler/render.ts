// Printing plans: human text (Terraform-like symbols), Markdown for pull requests. JSON is the Plan itself.
// The words of each change's reason and note's message come from its code (schemas/plan-reasons.ts, one
// table that the planner fills them from: this module imports the planner, so it cannot be the other way).
import type { Change, Note, Plan } from '../schemas/types.js';
import { formatDiagnostic, type Diagnostic } from './diagnostics.js';
import type { BranchReview, FieldChange, FleetDiff, ResourceChange } from './fleet-diff.js';
import { PLAN_FORMAT_VERSION } from './plan.js';

export interface TextOptions {
  color?: boolean;
  /** The line printed when there is no change (default NO_CHANGES). */
  noChanges?: string;
}

const SYMBOL: Record<Change['action'], string> = {
  register: '+',
  provision: '+',
  update: '~',
  power: '~',
  reimage: '!',
  retire: '-',
};

const NOTE_LABEL: Record<Note['kind'], string> = {
  'waiting-discovery': 'waiting for discovery',
  'in-progress': 'in progress',
  deferred: 'deferred',
  blocked: 'blocked',
  failed: 'failed',
  drift: 'drift',
  unmanaged: 'not in git',
  warning: 'warning',
};

const ANSI = { red: '\x1b[31m', green: '\x1b[32m', yellow: '\x1b[33m', bold: '\x1b[1m', dim: '\x1b[2m', reset: '\x1b[0m' };

function paint(on: boolean, color: keyof typeof ANSI, text: string): string {
  return on ? `${ANSI[color]}${text}${ANSI.reset}` : text;
}

function colorOf(action: Change['action']): keyof typeof ANSI {
  return action === 'register' || action === 'provision' ? 'green' : action === 'update' || action === 'power' ? 'yellow' : 'red';
}

function show(v: unknown): string {
  return v === null || v === undefined ? '(none)' : typeof v === 'string' ? v : JSON.stringify(v);
}

function who(c: { machine?: Change['machine'] }): string {
  const m = c.machine;
  if (!m) return '';
  return m.name === m.memorableName ? `${m.name} (${m.mac})` : `${m.name} (${m.mac}, ${m.memorableName})`;
}

/** One change as the lines a reviewer reads. */
export function changeLines(c: Change): string[] {
  const lines: string[] = [];
  const wf = c.workflow;
  switch (c.action) {
    case 'provision':
      lines.push(`${who(c)}: install ${wf!.template}@${wf!.generation} on ${wf!.disk}`);
      break;
    case 'reimage':
      lines.push(`${who(c)}: REIMAGE with ${wf!.template}@${wf!.generation}; the disks will be wiped`);
      break;
    case 'power':
      lines.push(`${who(c)}: power ${c.power?.from ?? '?'} → ${c.power!.to}`);
      break;
    default:
      lines.push(`${who(c)}`);
  }
  lines.push(`    ${c.reason}`);
  for (const d of c.diff ?? []) lines.push(`    ${d.path}: ${show(d.before)} → ${show(d.after)}`);
  for (const w of c.wipes ?? []) lines.push(`    will be lost: ${w}`);
  return lines;
}

export function summaryLine(plan: Plan): string {
  const s = plan.summary;
  return `Plan: ${s.add} to add, ${s.change} to change, ${s.reimage} to reimage, ${s.retire} to retire.`;
}

const NOTES_PER_KIND = 25;

function scopeList(macs: readonly string[]): string {
  return macs.slice(0, 3).join(', ') + (macs.length > 3 ? `, … ${macs.length - 3} more` : '');
}

export const NO_CHANGES = 'No changes. The fleet matches its configuration.';

export function renderPlanText(plan: Plan, opts: TextOptions = {}): string {
  const color = opts.color ?? false;
  const out: string[] = [];
  if (plan.changes.length > 0) {
    out.push('Dragonfly will perform the following actions:', '');
    for (const c of plan.changes) {
      const [head, ...rest] = changeLines(c);
      const line = `  ${SYMBOL[c.action]} ${c.action} ${head}`;
      out.push(paint(color, colorOf(c.action), c.action === 'reimage' ? paint(color, 'bold', line) : line));
      for (const r of rest) out.push(`  ${r}`);
    }
    out.push('');
  }
  if (plan.notes.length > 0) {
    out.push('Not changed by this plan:', '');
    // A large fleet can have thousands of machines waiting; show the first of each kind, count the rest.
    const shown = new Map<Note['kind'], number>();
    for (const n of plan.notes) {
      const count = (shown.get(n.kind) ?? 0) + 1;
      shown.set(n.kind, count);
      if (count <= NOTES_PER_KIND) out.push(`  · ${NOTE_LABEL[n.kind]}: ${n.machine ? `${who(n)}: ` : ''}${n.message}`);
    }
    for (const [kind, count] of shown) {
      if (count > NOTES_PER_KIND) out.push(`  · … and ${count - NOTES_PER_KIND} more ${NOTE_LABEL[kind]} (all of them: dragonfly plan --json)`);
    }
    out.push('');
  }
  if (plan.scope) {
    const n = plan.scope.length;
    out.push(paint(color, 'dim', `Scoped plan: ${n} machine${n === 1 ? '' : 's'} (${scopeList(plan.scope)}); machines outside the scope were not planned.`));
  }
  if (plan.changes.length === 0) out.push(paint(color, 'green', opts.noChanges ?? NO_CHANGES));
  else {
    out.push(paint(color, 'bold', summaryLine(plan)));
    if (plan.summary.reimage > 0) {
      out.push(paint(color, 'red', `${plan.summary.reimage} machine${plan.summary.reimage > 1 ? 's' : ''} will be reimaged: the data on their install disks will be lost.`));
    }
  }
  return out.join('\n') + '\n';
}

/** GitHub/GitLab comments are capped at 65,536 characters; stay well below. */
export const MARKDOWN_LIMIT = 60_000;

export interface MarkdownOptions {
  title?: string;
  limit?: number;
  /** Replaces the "Fleet revision …, store revision …" line. */
  revision?: string;
  /** Replaces NO_CHANGES. */
  noChanges?: string;
  /** Markdown lines placed after the summary table, before the collapsible details (kept when truncating). */
  sections?: string[];
}

export function renderPlanMarkdown(plan: Plan, opts: MarkdownOptions = {}): string {
  const limit = opts.limit ?? MARKDOWN_LIMIT;
  const head: string[] = [];
  head.push(`### ${opts.title ?? 'Dragonfly plan'}`, '');
  head.push(plan.changes.length === 0 ? `**${opts.noChanges ?? NO_CHANGES}**` : `**${summaryLine(plan)}**`);
  if (plan.summary.reimage > 0) {
    head.push('', `> [!WARNING]`, `> ${plan.summary.reimage} machine(s) will be **reimaged**: the data on their install disks will be lost.`);
  }
  head.push('', opts.revision ?? `Fleet revision \`${plan.fleetRevision}\`, store revision ${plan.storeRevision}.`, '');

  const counts = new Map<string, number>();
  for (const c of plan.changes) counts.set(c.action, (counts.get(c.action) ?? 0) + 1);
  const table = ['| action | machines |', '|---|---:|', ...[...counts].map(([a, n]) => `| \`${SYMBOL[a as Change['action']]} ${a}\` | ${n} |`)];

  const changeBlock = (c: Change): string => {
    const [first, ...rest] = changeLines(c);
    // diff highlighting: + green, - red; ~ and ! have no colour of their own.
    return [`${SYMBOL[c.action]} ${c.action} ${first}`, ...rest.map((r) => `  ${r}`)].join('\n');
  };
  const noteLine = (n: Note): string =>
    `- **${NOTE_LABEL[n.kind]}**: ${n.machine ? `\`${n.machine.name}\`: ` : ''}${n.message.replaceAll('|', '\\|')}`;
  const body = (changes: string[], notes: string[]): string[] => {
    const lines: string[] = [];
    if (changes.length > 0) lines.push(`<details><summary>Changes (${changes.length})</summary>`, '', '```diff', ...changes, '```', '', '</details>', '');
    if (notes.length > 0) lines.push(`<details><summary>Not changed by this plan (${notes.length})</summary>`, '', ...notes, '', '</details>', '');
    return lines;
  };

  const top = [...head, ...(counts.size > 0 ? [...table, ''] : []), ...(opts.sections ?? [])];
  const changes = plan.changes.map(changeBlock);
  const notes = plan.notes.map(noteLine);
  const full = [...top, ...body(changes, notes)].join('\n');
  if (full.length <= limit) return full;

  // Too long for a comment: keep the summary, then as many changes and notes as fit, and say how many
  // were left out. Changes come first: they are what the reviewer approves.
  let budget = limit - top.join('\n').length - 600;
  const take = (items: string[]) => {
    const kept: string[] = [];
    for (const item of items) {
      if (item.length + 1 > budget) break;
      kept.push(item);
      budget -= item.length + 1;
    }
    return kept;
  };
  const keptChanges = take(changes);
  const keptNotes = keptChanges.length === changes.length ? take(notes) : [];
  const omittedChanges = changes.length - keptChanges.length;
  const omittedNotes = notes.length - keptNotes.length;
  return [
    ...top,
    ...body(keptChanges, keptNotes),
    `_Not shown, to fit in a comment: ${omittedChanges} change(s) and ${omittedNotes} note(s). Run \`dragonfly plan\` for the whole plan._`,
    '',
  ].join('\n');
}

// -------------------------------------------------------------------------------------------------
// Branch reviews (`plan --base REF --head REF`) and resource diffs (`dragonfly diff`)

export const BRANCH_NO_CHANGES = 'No changes: this branch does not change what apply would do.';

const RESOURCE_SYMBOL: Record<ResourceChange['change'], string> = { added: '+', changed: '~', removed: '-', moved: '>' };
const TABLE_ROWS = 100;
const FIELDS_PER_RESOURCE = 10;

export function shortSha(sha: string): string {
  return sha.slice(0, 7);
}

/** `metadata.labels.rack: r1 → r2`; a field that is not there reads (none). */
export function fieldLine(f: FieldChange): string {
  return `${f.path}: ${show(f.before)} → ${show(f.after)}`;
}

export function resourceSummaryLine(diff: FleetDiff): string {
  const s = diff.summary;
  return `Resources: ${s.added} added, ${s.changed} changed, ${s.removed} removed${s.moved > 0 ? `, ${s.moved} moved` : ''}.`;
}

function resourceLines(diff: FleetDiff): string[] {
  const out: string[] = [];
  for (const r of diff.changes) {
    const where = r.previousFile ? `${r.previousFile} → ${r.file}` : r.file;
    out.push(`  ${RESOURCE_SYMBOL[r.change]} ${r.kind} ${r.name} ${r.change} (${where})`);
    for (const f of r.fields ?? []) out.push(`      ${fieldLine(f)}`);
  }
  for (const p of diff.problems) out.push(`  warning: at the ${p.side}: ${formatDiagnostic(p).replace(/\n/g, '\n  ')}`);
  return out;
}

/** `dragonfly diff`: one line per resource, its changed fields below it, and a summary line. */
export function renderFleetDiffText(diff: FleetDiff, header: string): string {
  const out = [header, ''];
  if (diff.changes.length === 0) out.push('  No resource changes.');
  out.push(...resourceLines(diff), '', resourceSummaryLine(diff));
  return out.join('\n') + '\n';
}

function reviewPlan(r: BranchReview): Plan {
  return {
    format_version: PLAN_FORMAT_VERSION,
    fleetRevision: r.head.commit,
    storeRevision: r.storeRevision,
    fingerprints: {},
    changes: r.changes,
    notes: r.notes,
    summary: r.summary,
    createdAt: '',
    hash: '',
  };
}

function revisionsLine(r: BranchReview): string {
  return `base ${shortSha(r.base.commit)} (${r.base.ref}) → head ${shortSha(r.head.commit)} (${r.head.ref})`;
}

/** `plan --base --head` for a terminal: resources, what the base plans and the head no longer does, then the plan. */
export function renderBranchText(r: BranchReview, opts: TextOptions = {}): string {
  const out: string[] = [];
  out.push(`Comparing ${revisionsLine(r)}${r.path ? ` in ${r.path}/` : ''}, against store revision ${r.storeRevision}.`, '');
  if (r.baseErrors !== undefined) out.push(`The base does not validate (${r.baseErrors} error${r.baseErrors > 1 ? 's' : ''}): every change of the head is listed.`, '');
  out.push('Resources changed by the branch:', '');
  if (r.resources.changes.length === 0) out.push('  none');
  out.push(...resourceLines(r.resources), '');
  if (r.withdrawn.length > 0) {
    out.push('No longer planned (the base would make these changes, the head does not):', '');
    for (const c of r.withdrawn) out.push(`  ${SYMBOL[c.action]} ${c.action} ${who(c)}`, `      ${c.reason}`);
    out.push('');
  }
  if (r.unchanged > 0) out.push(`${r.unchanged} change${r.unchanged > 1 ? 's' : ''} that the base would make as well ${r.unchanged > 1 ? 'are' : 'is'} not listed.`, '');
  return out.join('\n') + '\n' + renderPlanText(reviewPlan(r), { ...opts, noChanges: opts.noChanges ?? BRANCH_NO_CHANGES });
}

/** Inline code that survives backticks, and a table cell that survives pipes and newlines. */
function code(text: string): string {
  return text.includes('`') ? `\`\` ${text} \`\`` : `\`${text}\``;
}

function cell(text: string): string {
  return text.replaceAll('|', '\\|').replace(/\r?\n/g, '<br>');
}

function clip(text: string, max = 120): string {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function changeTable(changes: Change[]): string[] {
  const rows = changes.slice(0, TABLE_ROWS).map((c) => {
    const first = changeLines(c)[0]!;
    const what = first.slice(who(c).length).replace(/^: /, '');
    const details = [
      ...(what ? [what] : []),
      c.reason,
      ...(c.diff ?? []).map((d) => code(clip(`${d.path}: ${show(d.before)} → ${show(d.after)}`))),
      ...(c.wipes ?? []).map((w) => `**will be lost:** ${code(w)}`),
    ];
    return `| ${code(`${SYMBOL[c.action]} ${c.action}`)} | ${code(c.machine.name)} | ${cell(details.join('\n'))} |`;
  });
  const more = changes.length - rows.length;
  return [
    '| change | machine | details |',
    '|---|---|---|',
    ...rows,
    ...(more > 0 ? [`| … | | ${more} more: see the changes below |`] : []),
    '',
  ];
}

function resourceTable(diff: FleetDiff): string[] {
  const rows = diff.changes.slice(0, TABLE_ROWS).map((r) => {
    const fields = (r.fields ?? []).slice(0, FIELDS_PER_RESOURCE).map((f) => `${code(f.path)}: ${code(clip(show(f.before), 60))} → ${code(clip(show(f.after), 60))}`);
    const extra = (r.fields?.length ?? 0) - fields.length;
    if (extra > 0) fields.push(`… and ${extra} more`);
    const where = r.previousFile ? `${code(r.previousFile)} → ${code(r.file)}` : code(r.file);
    return `| ${r.kind} ${code(r.name)} | ${r.change} | ${where} | ${cell(fields.join('\n'))} |`;
  });
  const more = diff.changes.length - rows.length;
  const out = [`#### ${resourceSummaryLine(diff).replace(/\.$/, '')}`, ''];
  if (rows.length > 0) out.push('| resource | change | file | fields |', '|---|---|---|---|', ...rows, ...(more > 0 ? [`| … | | | ${more} more: \`dragonfly diff\` lists them all |`] : []), '');
  else out.push('No Machine, Template or Assignment changes.', '');
  for (const p of diff.problems.slice(0, TABLE_ROWS)) out.push(`- at the ${p.side}: ${code(`${p.file}:${p.line}:${p.col}`)} ${p.code} ${cell(p.message)}`);
  if (diff.problems.length > 0) out.push('');
  return out;
}

function diagnosticsBlock(diagnostics: Diagnostic[]): string[] {
  const text = diagnostics.slice(0, 200).map(formatDiagnostic);
  if (diagnostics.length > text.length) text.push(`… and ${diagnostics.length - text.length} more (dragonfly validate lists them all)`);
  const fence = text.some((t) => t.includes('```')) ? '~~~~' : '```';
  return [`${fence}text`, ...text, fence, ''];
}

/**
 * `plan --base --head --markdown`: a pull-request comment. For a valid head, the plan Markdown with a
 * base..head header, a table of the branch's changes, reimages and what they wipe, what the base plans
 * and the head no longer does, and the resources the branch edits. For an invalid head, its
 * diagnostics (file:line:col) and the resources it edits.
 */
export function renderBranchMarkdown(r: BranchReview, opts: { limit?: number } = {}): string {
  const title = `Dragonfly plan for ${code(`${shortSha(r.base.commit)}..${shortSha(r.head.commit)}`)}`;
  const folder = r.path ? ` Fleet folder ${code(r.path + '/')}: the paths below are relative to it.` : '';
  if (!r.head.valid) {
    const errors = r.diagnostics.filter((d) => d.severity === 'error').length;
    const md = [
      `### ${title}`,
      '',
      `**The fleet at ${code(shortSha(r.head.commit))} (${cell(r.head.ref)}) is invalid: ${errors} error${errors === 1 ? '' : 's'}. Nothing is planned until ${errors === 1 ? 'it is' : 'they are'} fixed.**`,
      '',
      `Base ${code(shortSha(r.base.commit))} (${cell(r.base.ref)}).${folder}`,
      '',
      ...diagnosticsBlock(r.diagnostics),
      ...resourceTable(r.resources),
    ].join('\n');
    const limit = opts.limit ?? MARKDOWN_LIMIT;
    return md.length <= limit ? md : md.slice(0, limit - 120) + '\n\n_Cut to fit in a comment: run `dragonfly validate` for every error._\n';
  }
  const sections: string[] = [];
  if (r.baseErrors !== undefined) {
    sections.push('> [!NOTE]', `> The base does not validate (${r.baseErrors} error${r.baseErrors > 1 ? 's' : ''}): every change of the head is listed.`, '');
  }
  if (r.changes.length > 0) sections.push(...changeTable(r.changes));
  const reimages = r.changes.filter((c) => c.action === 'reimage');
  if (reimages.length > 0) {
    sections.push(`#### Reimaged: what will be lost`, '');
    for (const c of reimages.slice(0, TABLE_ROWS)) {
      sections.push(`- ${code(c.machine.name)} (${c.machine.mac}): ${(c.wipes ?? []).map(code).join(', ') || 'the installed system'}`);
    }
    if (reimages.length > TABLE_ROWS) sections.push(`- … and ${reimages.length - TABLE_ROWS} more`);
    sections.push('');
  }
  if (r.withdrawn.length > 0) {
    sections.push(`#### No longer planned (${r.withdrawn.length})`, '', 'The base would make these changes; with this branch, apply no longer makes them.', '');
    for (const c of r.withdrawn.slice(0, TABLE_ROWS)) sections.push(`- ${code(`${SYMBOL[c.action]} ${c.action}`)} ${code(c.machine.name)}: ${cell(c.reason)}`);
    if (r.withdrawn.length > TABLE_ROWS) sections.push(`- … and ${r.withdrawn.length - TABLE_ROWS} more`);
    sections.push('');
  }
  sections.push(...resourceTable(r.resources));
  const warnings = r.diagnostics.filter((d) => d.severity === 'warning');
  if (warnings.length > 0) sections.push(`<details><summary>Warnings (${warnings.length})</summary>`, '', ...diagnosticsBlock(warnings), '</details>', '');
  const unchanged = r.unchanged > 0 ? ` ${r.unchanged} change${r.unchanged > 1 ? 's' : ''} that the base would make as well ${r.unchanged > 1 ? 'are' : 'is'} left out.` : '';
  return renderPlanMarkdown(reviewPlan(r), {
    title,
    ...(opts.limit !== undefined ? { limit: opts.limit } : {}),
    noChanges: BRANCH_NO_CHANGES,
    revision: `Base ${code(shortSha(r.base.commit))} (${cell(r.base.ref)}), head ${code(shortSha(r.head.commit))} (${cell(r.head.ref)}), planned against store revision ${r.storeRevision}.${folder} Only what the branch changes is listed.${unchanged}`,
    sections,
  });
}
