// The house keeps its layering (DESIGN.md, "Folders"): each top-level folder imports only the layers below
// it, and no module imports itself back through others (no import circle), type-only imports included.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './cli-helpers.js';

/** What each layer may import besides itself (DESIGN.md); cli, bench and test may import anything. */
const MAY_IMPORT: Record<string, string[]> = {
  schemas: [],
  store: ['schemas'],
  reconciler: ['schemas', 'store'],
  boot: ['schemas', 'store', 'p2p'],
  power: ['schemas'],
  mage: ['schemas', 'p2p'],
  p2p: ['schemas'],
  console: ['schemas', 'store'],
};

function sources(): string[] {
  const out: string[] = [];
  for (const layer of Object.keys(MAY_IMPORT)) {
    const walk = (dir: string) => {
      if (!fs.existsSync(dir)) return;
      for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        if (e.isDirectory() && e.name !== 'fixtures' && e.name !== 'node_modules') walk(p);
        else if (e.isFile() && p.endsWith('.ts') && !p.endsWith('.test.ts') && !/\/test-[^/]+\.ts$/.test(p)) out.push(path.relative(ROOT, p));
      }
    };
    walk(path.join(ROOT, layer));
  }
  return out.sort();
}

/** The project files a module imports (relative specifiers, .js → .ts). */
function importsOf(file: string): string[] {
  const text = fs.readFileSync(path.join(ROOT, file), 'utf8');
  const specs = [...text.matchAll(/^\s*(?:import|export)\b[^'"]*?from\s+['"](\.[^'"]+)['"]/gm)].map((m) => m[1]!);
  return specs.map((s) => path.normalize(path.join(path.dirname(file), s)).replace(/\.js$/, '.ts'));
}

describe('layering', () => {
  const files = sources();
  const graph = new Map(files.map((f) => [f, importsOf(f)]));

  it('no module imports a layer above its own', () => {
    const upward: string[] = [];
    for (const [file, deps] of graph) {
      const layer = file.split('/')[0]!;
      for (const dep of deps) {
        const to = dep.split('/')[0]!;
        if (to !== layer && !MAY_IMPORT[layer]!.includes(to)) upward.push(`${file} → ${dep}`);
      }
    }
    expect(upward).toEqual([]);
  });

  it('there is no import circle', () => {
    const cycles: string[] = [];
    const state = new Map<string, 'open' | 'done'>();
    const stack: string[] = [];
    const visit = (f: string) => {
      state.set(f, 'open');
      stack.push(f);
      for (const d of graph.get(f) ?? []) {
        if (!graph.has(d)) continue;
        if (state.get(d) === 'open') cycles.push([...stack.slice(stack.indexOf(d)), d].join(' → '));
        else if (!state.has(d)) visit(d);
      }
      stack.pop();
      state.set(f, 'done');
    };
    for (const f of files) if (!state.has(f)) visit(f);
    expect(cycles).toEqual([]);
  });

  it('reads every layer (the test would pass on an empty tree otherwise)', () => {
    expect(files.length).toBeGreaterThan(100);
    expect(new Set(files.map((f) => f.split('/')[0]))).toEqual(new Set(['schemas', 'store', 'reconciler', 'boot', 'mage', 'p2p']));
  });
});
