import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { DragonflyError, ERRORS } from './errors.js';

describe('error codes', () => {
  const doc = fs.readFileSync(new URL('../docs/errors.md', import.meta.url), 'utf8');
  const documented = [...doc.matchAll(/^### (DF_\w+)$/gm)].map((m) => m[1]);

  it('every code is documented in docs/errors.md, and every documented code exists', () => {
    expect(new Set(documented)).toEqual(new Set(Object.keys(ERRORS)));
    expect(documented.length).toBe(new Set(documented).size);
  });

  it('every code has a hint that says what to do and a sensible status', () => {
    for (const [code, spec] of Object.entries(ERRORS)) {
      expect(code).toMatch(/^DF_(ERR|WARN)_[A-Z0-9_]+$/);
      expect(spec.hint.length, code).toBeGreaterThan(10);
      expect([400, 401, 403, 404, 409, 410, 429, 500, 503]).toContain(spec.status);
    }
  });

  it('errors serialise with code, message and hint', () => {
    const e = new DragonflyError('DF_ERR_PLAN_STALE', 'the saved plan is stale: x', { reasons: ['x'] });
    expect(JSON.parse(JSON.stringify(e))).toEqual({ code: 'DF_ERR_PLAN_STALE', message: 'the saved plan is stale: x', hint: ERRORS.DF_ERR_PLAN_STALE.hint, reasons: ['x'] });
    expect(e.status).toBe(409);
  });
});
