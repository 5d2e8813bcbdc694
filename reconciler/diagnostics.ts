// A diagnostic is one problem in the fleet, located at file:line:col, with a code from schemas/errors.ts.
import { ERRORS, type ErrorCode } from '../schemas/errors.js';

export interface Position {
  file: string;
  line: number;
  col: number;
}

export interface Diagnostic extends Position {
  code: ErrorCode;
  severity: 'error' | 'warning';
  /** The field, as a dotted path (spec.actions[1].partition.disk), when there is one. */
  field?: string;
  message: string;
  hint: string;
}

export function diagnostic(
  code: ErrorCode,
  at: Position,
  message: string,
  opts: { field?: string; hint?: string } = {},
): Diagnostic {
  return {
    code,
    severity: code.startsWith('DF_WARN_') ? 'warning' : 'error',
    file: at.file,
    line: at.line,
    col: at.col,
    ...(opts.field !== undefined ? { field: opts.field } : {}),
    message,
    hint: opts.hint ?? ERRORS[code].hint,
  };
}

export function byPosition(a: Diagnostic, b: Diagnostic): number {
  return a.file < b.file ? -1 : a.file > b.file ? 1 : a.line - b.line || a.col - b.col;
}

/** `file:line:col: CODE message` and an indented hint line, as printed by validate/plan. */
export function formatDiagnostic(d: Diagnostic): string {
  const label = d.severity === 'warning' ? 'warning: ' : '';
  return `${d.file}:${d.line}:${d.col}: ${d.code} ${label}${d.message}\n  hint: ${d.hint}`;
}

export function fieldPath(path: readonly (string | number)[]): string {
  let out = '';
  for (const p of path) out += typeof p === 'number' ? `[${p}]` : out === '' ? p : `.${p}`;
  return out;
}

export function formatPosition(p: Position): string {
  return `${p.file}:${p.line}:${p.col}`;
}
