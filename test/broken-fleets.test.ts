// Broken fleets: every directory under test/fixtures/broken/ is a small fleet with exactly one defect,
// and its expect.json says which error a user must get, and where (file relative to the fixture, 1-based
// line and column). Checked three ways: the loader in-process, the real `dragonfly validate --json`, and
// `dragonfly apply` failing closed (the store is left exactly as it was).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { loadFleet } from '../reconciler/load.js';
import { readFleetDir } from '../reconciler/sources/fleet-dir.js';

const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
const BIN = path.join(ROOT, 'bin', 'dragonfly.js');
const BROKEN = path.join(ROOT, 'test', 'fixtures', 'broken');

interface Expected {
  code: string;
  file: string;
  line: number;
  col: number;
}

interface Fixture {
  name: string;
  /** Absolute path of the fixture directory. */
  dir: string;
  /** Path relative to the repository root, as a user would type it. */
  rel: string;
  expected: Expected;
}

function readExpected(dir: string): Expected {
  const raw = JSON.parse(fs.readFileSync(path.join(dir, 'expect.json'), 'utf8')) as Record<string, unknown>;
  const { code, file, line, col } = raw;
  if (typeof code !== 'string' || typeof file !== 'string' || typeof line !== 'number' || typeof col !== 'number') {
    throw new Error(`${dir}/expect.json must be {"code": string, "file": string, "line": number, "col": number}`);
  }
  return { code, file, line, col };
}

const FIXTURES: Fixture[] = fs
  .readdirSync(BROKEN, { withFileTypes: true })
  .filter((e) => e.isDirectory())
  .map((e) => e.name)
  .sort()
  .map((name) => {
    const dir = path.join(BROKEN, name);
    return { name, dir, rel: path.relative(ROOT, dir), expected: readExpected(dir) };
  });

function fixture(name: string): Fixture {
  const f = FIXTURES.find((x) => x.name === name);
  if (!f) throw new Error(`no fixture ${name} under ${BROKEN}`);
  return f;
}

interface CliResult {
  status: number | null;
  stdout: string;
  stderr: string;
}

function dragonfly(args: string[]): CliResult {
  const r = spawnSync(process.execPath, [BIN, ...args], {
    cwd: ROOT,
    encoding: 'utf8',
    input: '',
    env: { ...process.env, NO_COLOR: '1', DRAGONFLY_STATE: '' },
    timeout: 60_000,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

function describeResult(r: CliResult): string {
  return `exit ${r.status}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

interface JsonDiagnostic {
  code: string;
  file: string;
  line: number;
  col: number;
  severity: 'error' | 'warning';
  message: string;
  hint: string;
  field?: string;
}

describe('broken fixtures', () => {
  it('there are at least 45 of them, each with files to load', () => {
    expect(FIXTURES.length).toBeGreaterThanOrEqual(45);
    for (const f of FIXTURES) {
      expect(f.expected.code, f.name).toMatch(/^DF_ERR_[A-Z0-9_]+$/);
      expect(f.expected.line, f.name).toBeGreaterThanOrEqual(1);
      expect(f.expected.col, f.name).toBeGreaterThanOrEqual(1);
      if (f.expected.file !== '.') expect(fs.existsSync(path.join(f.dir, f.expected.file)), `${f.name}: ${f.expected.file}`).toBe(true);
    }
  });
});

describe('loadFleet reports the one defect of each broken fleet', () => {
  for (const f of FIXTURES) {
    it(`${f.name} → ${f.expected.code} at ${f.expected.file}:${f.expected.line}:${f.expected.col}`, () => {
      const result = loadFleet(readFleetDir(f.dir));
      const errors = result.diagnostics.filter((d) => d.severity === 'error');
      const shown = errors.map((d) => `${d.file}:${d.line}:${d.col}: ${d.code} ${d.message}`).join('\n');
      expect(result.fleet, 'a broken fleet must not load').toBeUndefined();
      expect(errors.length, `expected at least one error`).toBeGreaterThan(0);
      const first = errors[0]!;
      expect({ code: first.code, file: first.file, line: first.line, col: first.col }, `errors:\n${shown}`).toEqual(f.expected);
      expect(errors, `exactly one error for one defect; got:\n${shown}`).toHaveLength(1);
      expect(first.message, 'the message says what is wrong').not.toBe('');
      expect(first.hint, 'the hint says what to do').not.toBe('');
    });
  }
});

describe('dragonfly validate --json reports each broken fleet', () => {
  for (const f of FIXTURES) {
    it(`${f.name}: exit 1 and ${f.expected.code} at ${f.expected.file}:${f.expected.line}:${f.expected.col}`, () => {
      const r = dragonfly(['validate', '--fleet', f.rel, '--json']);
      expect(r.status, describeResult(r)).toBe(1);
      let out: { valid: boolean; diagnostics: JsonDiagnostic[] };
      try {
        out = JSON.parse(r.stdout) as { valid: boolean; diagnostics: JsonDiagnostic[] };
      } catch {
        throw new Error(`stdout is not JSON:\n${describeResult(r)}`);
      }
      expect(out.valid).toBe(false);
      expect(Array.isArray(out.diagnostics), 'diagnostics is a list').toBe(true);
      for (const d of out.diagnostics) {
        expect(typeof d.code, JSON.stringify(d)).toBe('string');
        expect(typeof d.file, JSON.stringify(d)).toBe('string');
        expect(Number.isInteger(d.line), JSON.stringify(d)).toBe(true);
        expect(Number.isInteger(d.col), JSON.stringify(d)).toBe(true);
        expect(['error', 'warning'], JSON.stringify(d)).toContain(d.severity);
        expect(typeof d.message, JSON.stringify(d)).toBe('string');
        expect(typeof d.hint, JSON.stringify(d)).toBe('string');
        if (d.field !== undefined) expect(typeof d.field, JSON.stringify(d)).toBe('string');
      }
      expect(out.diagnostics, JSON.stringify(out.diagnostics, null, 2)).toContainEqual(
        expect.objectContaining({ ...f.expected, severity: 'error' }),
      );
    });
  }
});

describe('apply of a broken fleet fails closed and leaves the store unchanged', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });

  // YAML error (drops a machine's file), duplicate MAC, dangling reference, double assignment, and the
  // empty fleet (which, if it were applied, would retire every machine).
  const chosen = [
    '03-yaml-tab-indent',
    '48-duplicate-mac-across-machines',
    '54-missing-template',
    '56-double-assignment-selectors',
    '72-empty-fleet',
  ];
  for (const name of chosen) {
    it(`${name}: apply exits 1 and machines --json is unchanged`, () => {
      const f = fixture(name);
      const state = fs.mkdtempSync(path.join(os.tmpdir(), 'dragonfly-broken-'));
      dirs.push(state);

      const good = dragonfly(['apply', '--fleet', 'fleet.example', '--state', state, '--auto-approve']);
      expect(good.status, describeResult(good)).toBe(0);
      const before = dragonfly(['machines', '--state', state, '--json']);
      expect(before.status, describeResult(before)).toBe(0);
      expect(() => JSON.parse(before.stdout) as unknown, 'machines --json prints JSON').not.toThrow();

      const bad = dragonfly(['apply', '--fleet', f.rel, '--state', state, '--auto-approve']);
      expect(bad.status, describeResult(bad)).toBe(1);

      const after = dragonfly(['machines', '--state', state, '--json']);
      expect(after.status, describeResult(after)).toBe(0);
      expect(after.stdout).toBe(before.stdout);
    });
  }
});
