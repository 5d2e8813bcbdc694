// YAML → documents that remember where every node came from. Pure: takes file texts, returns data.
import { LineCounter, parseAllDocuments, isMap, isPair, isScalar, isSeq, type Document, type Node, type YAMLError } from 'yaml';
import { diagnostic, type Diagnostic, type Position } from './diagnostics.js';
import type { ErrorCode } from '../schemas/errors.js';

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

function yamlDiagnostic(file: SourceFile, err: YAMLError, lc: LineCounter): Diagnostic {
  const pos = err.linePos?.[0] ?? lc.linePos(err.pos[0]);
  let code = YAML_CODES[err.code] ?? 'DF_ERR_YAML_SYNTAX';
  // The yaml parser reports a tab used as indentation in a few ways; the source line tells the truth.
  if (code !== 'DF_ERR_YAML_TAB' && /^ *\t/.test(lineText(file.text, lc, err.pos[0]))) code = 'DF_ERR_YAML_TAB';
  return diagnostic(code, { file: file.path, line: pos.line, col: pos.col }, firstLine(err.message));
}

function lineText(text: string, lc: LineCounter, offset: number): string {
  const { line } = lc.linePos(offset);
  return text.slice(lc.lineStarts[line - 1] ?? 0, lc.lineStarts[line] ?? text.length);
}

function nodeAt(doc: Document, path: readonly (string | number)[]): { node: Node | undefined; depth: number } {
  let node: unknown = doc.contents;
  let depth = 0;
  for (const key of path) {
    let next: unknown;
    if (isMap(node)) next = node.items.find((p) => isPair(p) && isScalar(p.key) && p.key.value === key)?.value;
    else if (isSeq(node) && typeof key === 'number') next = node.items[key];
    if (next === undefined || next === null) break;
    node = next;
    depth++;
  }
  return { node: (node ?? undefined) as Node | undefined, depth };
}

export function parseFile(file: SourceFile): { docs: ParsedDoc[]; diagnostics: Diagnostic[] } {
  const lc = new LineCounter();
  const docs: ParsedDoc[] = [];
  const diagnostics: Diagnostic[] = [];
  const all = parseAllDocuments(file.text, { lineCounter: lc, uniqueKeys: true, prettyErrors: true });
  const list = Array.isArray(all) ? all : [all];
  const position = (offset: number): Position => {
    const p = lc.linePos(offset);
    return { file: file.path, line: p.line, col: p.col };
  };
  list.forEach((doc, index) => {
    const errors = [...doc.errors];
    for (const err of errors) diagnostics.push(yamlDiagnostic(file, err, lc));
    if (errors.length > 0) return;
    // An empty document (a trailing ---, a file of comments) holds nothing to load.
    if (doc.contents === null) return;
    const value = doc.toJS({ maxAliasCount: 100 });
    const docStart = doc.contents.range?.[0] ?? 0;
    docs.push({
      file: file.path,
      index,
      value,
      at(path) {
        const { node } = nodeAt(doc, path);
        return position(node?.range?.[0] ?? docStart);
      },
      keyAt(path, key) {
        const { node, depth } = nodeAt(doc, path);
        if (depth === path.length && isMap(node)) {
          const pair = node.items.find((p) => isScalar(p.key) && p.key.value === key);
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
    });
  });
  return { docs, diagnostics };
}
