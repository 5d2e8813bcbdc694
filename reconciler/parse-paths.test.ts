// Two YAML parsers read fleet files: js-yaml on the fast path, `yaml` (with positions) as the reference.
// This holds them to one answer: on every fixture — the example fleet, the valid and the broken corpus, a
// generated fleet — both paths give the same values, the same diagnostics, and the same positions.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeFleet } from '../bench/fleet-generator.js';
import { fullParse, parseFile, type ParsedDoc, type SourceFile } from './parse.js';

const ROOT = path.join(import.meta.dirname, '..');

function yamlFiles(dir: string): SourceFile[] {
  const out: SourceFile[] = [];
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.ya?ml$/.test(e.name)) out.push({ path: path.relative(ROOT, p), text: fs.readFileSync(p, 'utf8') });
    }
  };
  walk(dir);
  return out;
}

/** Every path to a value in `v`, so positions can be compared node by node. */
function paths(v: unknown, prefix: (string | number)[] = []): (string | number)[][] {
  const out = [prefix];
  if (Array.isArray(v)) v.forEach((x, i) => out.push(...paths(x, [...prefix, i])));
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) out.push(...paths(x, [...prefix, k]));
  return out;
}

const shape = (docs: ParsedDoc[]) =>
  docs.map((d) => ({ value: d.value, at: paths(d.value).map((p) => [p.join('.'), d.at(p)]) }));

describe('the fast YAML path and the reference agree', () => {
  const generated = fs.mkdtempSync(path.join(os.tmpdir(), 'df-parse-'));
  writeFleet(path.join(generated, 'fleet'), { machines: 200, templates: 3, assignments: 4 });
  const corpora: [string, SourceFile[]][] = [
    ['fleet.example', yamlFiles(path.join(ROOT, 'fleet.example'))],
    ['test/fixtures/valid', yamlFiles(path.join(ROOT, 'test/fixtures/valid'))],
    ['test/fixtures/broken', yamlFiles(path.join(ROOT, 'test/fixtures/broken'))],
    ['a generated fleet', yamlFiles(path.join(generated, 'fleet'))],
  ];

  for (const [name, files] of corpora) {
    it(`on ${name} (${files.length} files): values, diagnostics and every node's position`, () => {
      expect(files.length).toBeGreaterThan(0);
      for (const file of files) {
        const fast = parseFile(file);
        const ref = fullParse(file);
        expect(fast.diagnostics, file.path).toEqual(ref.diagnostics);
        expect(shape(fast.docs), file.path).toEqual(shape(ref.docs));
      }
    });
  }

  afterAll(() => fs.rmSync(generated, { recursive: true, force: true }));
});
