// Printing plans: human text (Terraform-like symbols), Markdown for pull requests. JSON is the Plan itself.
import type { Change, Note, Plan } from '../schemas/types.js';

export interface TextOptions {
  color?: boolean;
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
  if (plan.changes.length === 0) out.push(paint(color, 'green', NO_CHANGES));
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

export function renderPlanMarkdown(plan: Plan, opts: { title?: string; limit?: number } = {}): string {
  const limit = opts.limit ?? MARKDOWN_LIMIT;
  const head: string[] = [];
  head.push(`### ${opts.title ?? 'Dragonfly plan'}`, '');
  head.push(plan.changes.length === 0 ? `**${NO_CHANGES}**` : `**${summaryLine(plan)}**`);
  if (plan.summary.reimage > 0) {
    head.push('', `> [!WARNING]`, `> ${plan.summary.reimage} machine(s) will be **reimaged**: the data on their install disks will be lost.`);
  }
  head.push('', `Fleet revision \`${plan.fleetRevision}\`, store revision ${plan.storeRevision}.`, '');

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

  const top = [...head, ...(counts.size > 0 ? [...table, ''] : [])];
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
