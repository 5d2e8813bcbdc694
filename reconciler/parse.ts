// YAML → documents that remember where every node came from. Pure: takes file texts, returns data.
import { CORE_SCHEMA, loadAll } from 'js-yaml';
import { createRequire } from 'node:module';
import type { Document, LineCounter, Node, YAMLError } from 'yaml';
import { diagnostic, type Diagnostic, type Position } from './diagnostics.js';
import type { ErrorCode } from '../schemas/errors.js';

// The reference parser (`yaml`, the one with positions) is loaded when a position is wanted — a file with an
// error — not on every cold start of a valid fleet (the fast path is js-yaml).
const require = createRequire(import.meta.url);
let yamlLib: typeof import('yaml') | undefined;
const yaml = (): typeof import('yaml') => (yamlLib ??= require('yaml') as typeof import('yaml'));

export interface SourceFile {
  /** Path relative to the fleet root, with '/' separators. */
  path: string;
  text: string;
}

/** One YAML document of a fleet file, its plain JS value, and the way back to positions. */
export interface ParsedDoc {
  file: string;
  index: number;
  value: unknown;
  /** Position of the node at `path` (or of the nearest existing ancestor). */
  at(path: readonly (string | number)[]): Position;
  /** Position of the key of the property `key` in the mapping at `path`. */
  keyAt(path: readonly (string | number)[], key: string): Position;
  /** Source text and start offset of the node at `path`, for locating text inside a scalar. */
  sourceOf(path: readonly (string | number)[]): { text: string; offset: number } | undefined;
  positionOfOffset(offset: number): Position;
}

const YAML_CODES: Record<string, ErrorCode> = {
  TAB_AS_INDENT: 'DF_ERR_YAML_TAB',
  BAD_INDENT: 'DF_ERR_YAML_INDENT',
  DUPLICATE_KEY: 'DF_ERR_YAML_DUPLICATE_KEY',
};

function firstLine(message: string): string {
  return message.split('\n')[0]!.replace(/ at line \d+, column \d+:?$/, '');
}

function lineText(text: string, lc: LineCounter, offset: number): string {
  const { line } = lc.linePos(offset);
  return text.slice(lc.lineStarts[line - 1] ?? 0, lc.lineStarts[line] ?? text.length);
}

/** Offset of the first non-blank character of the line that holds `offset`. */
function lineContentStart(text: string, lc: LineCounter, offset: number): number {
  const start = lc.lineStarts[lc.linePos(offset).line - 1] ?? 0;
  return start + (/^[ \t]*/.exec(text.slice(start))?.[0].length ?? 0);
}

/** Offset of the bracket that opens the flow collection still open at `offset`, scanning back. */
function unclosedOpener(text: string, offset: number, open: string, close: string): number | undefined {
  let depth = 0;
  for (let i = Math.min(offset, text.length) - 1; i >= 0; i--) {
    if (text[i] === close) depth++;
    else if (text[i] === open && depth-- === 0) return i;
  }
  return undefined;
}

/**
 * One diagnostic for a document's YAML errors. The parser's first error is the cause (the rest cascade
 * from it), but it often names the place where parsing gave up; point at where the user must edit.
 */
function yamlDiagnostic(file: SourceFile, err: YAMLError, lc: LineCounter): Diagnostic {
  const text = file.text;
  let offset = err.pos[0];
  let code = YAML_CODES[err.code] ?? 'DF_ERR_YAML_SYNTAX';
  let message = firstLine(err.message);
  const flow = /^Flow (map|sequence) in block collection/.exec(message);
  const quote = /^Missing closing (["'])quote/.exec(message);
  if (flow) {
    const [open, close] = flow[1] === 'map' ? ['{', '}'] : ['[', ']'];
    const at = unclosedOpener(text, offset, open, close);
    if (at !== undefined) [offset, code, message] = [at, 'DF_ERR_YAML_SYNTAX', `this ${open} is never closed with ${close}`];
  } else if (quote) {
    const at = text.lastIndexOf(quote[1]!, offset - 1);
    if (at >= 0) [offset, message] = [at, `this ${quote[1]} is never closed`];
  } else if (err.code === 'BAD_INDENT') {
    offset = lineContentStart(text, lc, offset);
  } else if (err.code === 'BLOCK_AS_IMPLICIT_KEY' || err.code === 'MULTILINE_IMPLICIT_KEY') {
    // `key: value` followed by a line indented deeper: the parser reads both lines as one key.
    const line = lc.linePos(offset).line;
    const indentOf = (l: number) => /^ */.exec(text.slice(lc.lineStarts[l - 1] ?? 0))![0].length;
    let next = line + 1;
    while (next <= lc.lineStarts.length && /^\s*(#.*)?$/.test(text.slice(lc.lineStarts[next - 1]!, lc.lineStarts[next] ?? text.length))) next++;
    if (next <= lc.lineStarts.length && indentOf(next) > indentOf(line)) {
      [offset, code, message] = [lc.lineStarts[next - 1]! + indentOf(next), 'DF_ERR_YAML_INDENT', 'this line is indented deeper than the mapping it belongs to'];
    }
  }
  if (code !== 'DF_ERR_YAML_TAB' && /^ *\t/.test(lineText(text, lc, offset))) code = 'DF_ERR_YAML_TAB';
  const pos = lc.linePos(offset);
  return diagnostic(code, { file: file.path, line: pos.line, col: pos.col }, message);
}

function nodeAt(doc: Document, path: readonly (string | number)[]): { node: Node | undefined; depth: number } {
  let node: unknown = doc.contents;
  let depth = 0;
  for (const key of path) {
    let next: unknown;
    if (yaml().isMap(node)) next = node.items.find((p) => yaml().isPair(p) && yaml().isScalar(p.key) && p.key.value === key)?.value;
    else if (yaml().isSeq(node) && typeof key === 'number') next = node.items[key];
    if (next === undefined || next === null) break;
    node = next;
    depth++;
  }
  return { node: (node ?? undefined) as Node | undefined, depth };
}

interface Locator {
  at(path: readonly (string | number)[]): Position;
  keyAt(path: readonly (string | number)[], key: string): Position;
  sourceOf(path: readonly (string | number)[]): { text: string; offset: number } | undefined;
  positionOfOffset(offset: number): Position;
}

function locator(file: SourceFile, doc: Document, lc: LineCounter): Locator {
  const position = (offset: number): Position => {
    const p = lc.linePos(offset);
    return { file: file.path, line: p.line, col: p.col };
  };
  const docStart = doc.contents?.range?.[0] ?? 0;
  return {
    at(path) {
      const { node } = nodeAt(doc, path);
      return position(node?.range?.[0] ?? docStart);
    },
    keyAt(path, key) {
      const { node, depth } = nodeAt(doc, path);
      if (depth === path.length && yaml().isMap(node)) {
        const pair = node.items.find((p) => yaml().isScalar(p.key) && p.key.value === key);
        const k = pair?.key as Node | undefined;
        if (k?.range) return position(k.range[0]);
      }
      return position(node?.range?.[0] ?? docStart);
    },
    sourceOf(path) {
      const { node, depth } = nodeAt(doc, path);
      if (depth !== path.length || !node?.range) return undefined;
      return { text: file.text.slice(node.range[0], node.range[1]), offset: node.range[0] };
    },
    positionOfOffset: position,
  };
}

/** A document with nothing in it: a file of comments, or what follows a trailing `---`. */
function isEmptyDocument(doc: Document): boolean {
  const c = doc.contents;
  return c === null || (yaml().isScalar(c) && c.value === null && (c.source === '' || c.source === undefined));
}

// `${disk}` is written bare in flow mappings (`image2disk: {disk: ${disk}}`), where YAML would read its
// braces as syntax. Before parsing, the braces of each `${…}` become two private-use characters of the
// same length (so every offset stays true), and become braces again in the parsed values.
const VARIABLE = /\$\{([^{}\n]*)\}/g;
const OPEN = '\uE000';
const CLOSE = '\uE001';
const MASKED = /[\uE000\uE001]/g;

/** Whether a text is masked: it has a variable, and none of the two characters (then it is left alone). */
function masks(text: string): boolean {
  return text.includes('${') && !text.includes(OPEN) && !text.includes(CLOSE);
}

function maskVariables(text: string): string {
  return masks(text) ? text.replace(VARIABLE, `$${OPEN}$1${CLOSE}`) : text;
}

function unmask<T>(value: T): T {
  if (typeof value === 'string') return (value.includes(OPEN) || value.includes(CLOSE) ? value.replace(MASKED, (c) => (c === OPEN ? '{' : '}')) : value) as T;
  if (Array.isArray(value)) return value.map(unmask) as T;
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [unmask(k), unmask(v)])) as T;
  }
  return value;
}

function parseWithPositions(file: SourceFile): { docs: Document[]; lc: LineCounter } {
  const lc = new (yaml().LineCounter)();
  const all = yaml().parseAllDocuments(maskVariables(file.text), { lineCounter: lc, uniqueKeys: true, prettyErrors: true });
  return { docs: Array.isArray(all) ? all : [all], lc };
}

/** The reference parse: the `yaml` library's AST, which knows the position of every node and error (parse-paths.test.ts holds the fast path to it). */
export function fullParse(file: SourceFile): { docs: ParsedDoc[]; diagnostics: Diagnostic[] } {
  const { docs: list, lc } = parseWithPositions(file);
  const masked = masks(file.text);
  const docs: ParsedDoc[] = [];
  const diagnostics: Diagnostic[] = [];
  list.forEach((doc, index) => {
    if (doc.errors.length > 0) {
      diagnostics.push(yamlDiagnostic(file, doc.errors[0]!, lc));
      return;
    }
    if (isEmptyDocument(doc)) return;
    const value: unknown = doc.toJS({ maxAliasCount: 100 });
    docs.push({ file: file.path, index, value: masked ? unmask(value) : value, ...locator(file, doc, lc) });
  });
  return { docs, diagnostics };
}

// Aliases (billion laughs), tabs and merge keys take the reference path, which limits and reports them.
const NEEDS_FULL_PARSE = /(?:^|[\s,[{])\*[^\s,\]}]|\t|<</m;

/**
 * Parse one file. The fast path (js-yaml, YAML 1.2 core schema — the same schema as the `yaml` library's
 * default) parses the valid files that make up almost all of a fleet in a tenth of the time; positions
 * are computed lazily from the `yaml` AST only when a diagnostic needs one. Anything unusual — a syntax
 * error, an empty or null document, aliases — takes the reference path.
 */
export function parseFile(file: SourceFile): { docs: ParsedDoc[]; diagnostics: Diagnostic[] } {
  if (NEEDS_FULL_PARSE.test(file.text)) return fullParse(file);
  let values: unknown[];
  try {
    values = loadAll(maskVariables(file.text), undefined, { schema: CORE_SCHEMA, json: false });
  } catch {
    return fullParse(file);
  }
  if (masks(file.text)) values = values.map(unmask);
  if (values.some((v) => v === null || v === undefined)) return fullParse(file);
  let lazy: { docs: Document[]; lc: LineCounter } | undefined;
  const located = new Map<number, Locator>();
  const locate = (i: number): Locator => {
    let l = located.get(i);
    if (!l) {
      lazy ??= parseWithPositions(file);
      const doc = lazy.docs.filter((d) => !isEmptyDocument(d))[i];
      l = doc ? locator(file, doc, lazy.lc) : locator(file, new (yaml().Document)(null), lazy.lc);
      located.set(i, l);
    }
    return l;
  };
  const docs = values.map(
    (value, index): ParsedDoc => ({
      file: file.path,
      index,
      value,
      at: (path) => locate(index).at(path),
      keyAt: (path, key) => locate(index).keyAt(path, key),
      sourceOf: (path) => locate(index).sourceOf(path),
      positionOfOffset: (offset) => locate(index).positionOfOffset(offset),
    }),
  );
  return { docs, diagnostics: [] };
}
