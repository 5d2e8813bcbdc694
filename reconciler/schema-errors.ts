// Ajv errors → diagnostics at the YAML position of the offending node, with our codes and hints.
import type { SchemaError } from '../schemas/validate.js';
import { FORMATS } from '../schemas/formats.js';
import { diagnostic, fieldPath, type Diagnostic } from './diagnostics.js';
import type { ParsedDoc } from './parse.js';

function pointerToPath(pointer: string): (string | number)[] {
  if (pointer === '') return [];
  return pointer
    .slice(1)
    .split('/')
    .map((s) => s.replaceAll('~1', '/').replaceAll('~0', '~'))
    .map((s) => (/^\d+$/.test(s) ? Number(s) : s));
}

function closest(word: string, candidates: string[]): string | undefined {
  let best: string | undefined;
  let bestScore = Infinity;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c.toLowerCase());
    if (d < bestScore) [best, bestScore] = [c, d];
  }
  return bestScore <= Math.max(2, Math.floor(word.length / 3)) ? best : undefined;
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    let prev = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const cur = row[j]!;
      row[j] = Math.min(row[j]! + 1, row[j - 1]! + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = cur;
    }
  }
  return row[b.length]!;
}

const CREDENTIAL_FIELDS = new Set(['user', 'username', 'password', 'pass', 'secret', 'token']);

function describe(value: unknown): string {
  if (value === null) return 'null';
  if (Array.isArray(value)) return 'a list';
  if (typeof value === 'object') return 'a mapping';
  return `${typeof value} ${JSON.stringify(value)}`;
}

function valueAt(root: unknown, path: (string | number)[]): unknown {
  let v: unknown = root;
  for (const p of path) v = v == null ? undefined : (v as Record<string | number, unknown>)[p];
  return v;
}

/** The Action schema is the one whose property names are an enum (schemaPaths are relative to a $ref, so the shape tells). */
function isActionSchema(schema: unknown): boolean {
  return Array.isArray((schema as { propertyNames?: { enum?: unknown } } | undefined)?.propertyNames?.enum);
}

export function schemaDiagnostics(doc: ParsedDoc, errors: SchemaError[]): Diagnostic[] {
  const out: Diagnostic[] = [];
  // A failed oneOf explains itself; the branch errors underneath it are noise.
  const oneOfs = errors.filter((e) => e.keyword === 'oneOf');
  const underOneOf = (e: SchemaError) =>
    oneOfs.some((o) => o !== e && e.instancePath === o.instancePath && e.schemaPath.startsWith(o.schemaPath + '/'));
  const seen = new Set<string>();
  // A misspelt key shows up twice: as unknown, and as the required key it was meant to be. Say it once.
  const unknownKeys = new Map<string, string[]>();
  for (const e of errors) {
    if (e.keyword !== 'additionalProperties') continue;
    const list = unknownKeys.get(e.instancePath) ?? [];
    list.push(String(e.params.additionalProperty));
    unknownKeys.set(e.instancePath, list);
  }
  const explainedByUnknown = (e: SchemaError) => {
    if (e.keyword !== 'required') return false;
    const missing = String(e.params.missingProperty);
    return (unknownKeys.get(e.instancePath) ?? []).some(
      (u) => closest(u, [missing]) !== undefined || (missing === 'credentialsRef' && CREDENTIAL_FIELDS.has(u.toLowerCase())),
    );
  };

  for (const e of errors) {
    // 'if' only says which branch failed; the 'required' error under it names the field.
    if (underOneOf(e) || e.keyword === 'propertyNames' || e.keyword === 'if' || explainedByUnknown(e)) continue;
    const path = pointerToPath(e.instancePath);
    const field = fieldPath(path);
    const value = valueAt(doc.value, path);
    let d: Diagnostic | undefined;

    if (e.propertyName !== undefined) {
      // A bad key (propertyNames): an unknown action name, or a malformed label key.
      const key = e.propertyName;
      const at = doc.keyAt(path, key);
      if (e.keyword === 'enum') {
        // The only enum over property names is the action list.
        const suggestion = closest(key, ['partition', 'image2disk', 'writefile', 'kexec']);
        d = diagnostic('DF_ERR_UNKNOWN_ACTION', at, `${field}: unknown action "${key}"`, {
          field,
          ...(suggestion ? { hint: `did you mean "${suggestion}"? The native actions are partition, image2disk, writefile, kexec` } : {}),
        });
      } else {
        const f = FORMATS[String(e.params.format)];
        d = diagnostic(f?.code ?? 'DF_ERR_LABEL', at, `${field}: key "${key}" is not ${f?.what ?? 'valid'}`, { field });
      }
    } else {
      switch (e.keyword) {
        case 'additionalProperties': {
          const key = String(e.params.additionalProperty);
          const allowed = Object.keys((e.parentSchema as { properties?: object } | undefined)?.properties ?? {});
          const suggestion = closest(key, allowed);
          const full = fieldPath([...path, key]);
          const hint = CREDENTIAL_FIELDS.has(key.toLowerCase())
            ? 'credentials are never written in git: set bmc.credentialsRef and give the server DRAGONFLY_CRED_<NAME> or a --credentials file'
            : suggestion
              ? `did you mean "${suggestion}"? Allowed here: ${allowed.join(', ')}`
              : `allowed here: ${allowed.join(', ')}`;
          d = diagnostic('DF_ERR_UNKNOWN_FIELD', doc.keyAt(path, key), `unknown field "${full}"`, { field: full, hint });
          break;
        }
        case 'required': {
          const key = String(e.params.missingProperty);
          const full = fieldPath([...path, key]);
          d = diagnostic('DF_ERR_MISSING_FIELD', doc.at(path), `missing required field "${full}"`, {
            field: full,
            hint: `add "${key}" to ${field || 'the document'}`,
          });
          break;
        }
        case 'type':
          if (path.at(-1) === 'mode' && typeof value === 'number') {
            d = diagnostic('DF_ERR_FILE_MODE', doc.at(path), `${field} is the number ${value}, not a file mode`, {
              field,
              hint: `quote the mode: mode: "0${String(value).padStart(3, '0')}" (unquoted, YAML reads 0644 as the decimal number 644)`,
            });
            break;
          }
          d = diagnostic('DF_ERR_TYPE', doc.at(path), `${field} must be ${e.params.type}, not ${describe(value)}`, { field });
          break;
        case 'enum':
        case 'const': {
          const allowed = (e.keyword === 'enum' ? (e.params.allowedValues as unknown[]) : [e.params.allowedValue]).map((v) =>
            JSON.stringify(v),
          );
          d = diagnostic('DF_ERR_ENUM', doc.at(path), `${field} is ${describe(value)}; allowed: ${allowed.join(', ')}`, {
            field,
            hint: `use one of ${allowed.join(', ')}`,
          });
          break;
        }
        case 'format': {
          const f = FORMATS[String(e.params.format)];
          d = diagnostic(f?.code ?? 'DF_ERR_TYPE', doc.at(path), `${field}: ${describe(value)} is not ${f?.what ?? e.params.format}`, {
            field,
          });
          break;
        }
        case 'minProperties':
        case 'maxProperties':
          if (isActionSchema(e.parentSchema)) {
            const keys = Object.keys((value as object) ?? {});
            d = diagnostic(
              'DF_ERR_ACTION_SHAPE',
              keys.length > 1 ? doc.keyAt(path, keys[1]!) : doc.at(path),
              keys.length === 0 ? `${field} names no action` : `${field} has ${keys.length} keys (${keys.join(', ')})`,
              { field },
            );
            break;
          }
        // falls through
        case 'minimum':
        case 'maximum':
        case 'exclusiveMinimum':
        case 'minItems':
        case 'maxItems':
        case 'minLength':
        case 'maxLength':
          d = diagnostic('DF_ERR_RANGE', doc.at(path), `${field} ${e.message}`, { field });
          break;
        case 'oneOf': {
          const branches = ((e.parentSchema as { oneOf?: { required?: string[] }[] })?.oneOf ?? []).flatMap((b) => b.required ?? []);
          const present = branches.filter((b) => value && typeof value === 'object' && b in value);
          const msg =
            present.length > 1
              ? `${field} sets ${present.join(' and ')}; exactly one of ${branches.join(', ')} is allowed`
              : `${field} needs exactly one of ${branches.join(', ')}`;
          d = diagnostic('DF_ERR_EXACTLY_ONE', present.length > 1 ? doc.keyAt(path, present[1]!) : doc.at(path), msg, { field, hint: `keep exactly one of: ${branches.join(', ')}` });
          break;
        }
        default:
          d = diagnostic('DF_ERR_TYPE', doc.at(path), `${field || 'document'} ${e.message ?? 'is invalid'}`, { field });
      }
    }
    const key = `${d.code}|${d.line}|${d.col}|${d.message}`;
    if (!seen.has(key)) {
      seen.add(key);
      out.push(d);
    }
  }
  return out;
}
