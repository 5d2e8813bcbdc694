import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isDragonflyError } from '../schemas/errors.js';
import { loadOrCreateSecret, verifyWorkflowToken, workflowToken } from './tokens.js';

const dirs: string[] = [];
const tempDir = () => {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'df-secret-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

describe('server.secret', () => {
  it('is created whole, 0600, and read back the same', () => {
    const dir = tempDir();
    const a = loadOrCreateSecret(dir);
    const file = path.join(dir, 'server.secret');
    expect(fs.readFileSync(file, 'utf8')).toMatch(/^[0-9a-f]{64}\n$/);
    expect(fs.statSync(file).mode & 0o777).toBe(0o600);
    expect(loadOrCreateSecret(dir).equals(a)).toBe(true);
    // No temp file is left behind.
    expect(fs.readdirSync(dir)).toEqual(['server.secret']);
  });

  // The attack: a first start on a full disk left a 0-byte file; every later start signed tokens with an
  // empty key, which anyone can compute.
  it.each([
    ['empty', ''],
    ['truncated', 'ab12'],
    ['not hex', 'z'.repeat(64)],
    ['too long', 'a'.repeat(65)],
    ['two lines', `${'a'.repeat(64)}\n${'b'.repeat(64)}\n`],
  ])('a %s file is refused with DF_ERR_SECRET_FILE, never used', (_what, text) => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'server.secret'), text, { mode: 0o600 });
    let err: unknown;
    try {
      loadOrCreateSecret(dir);
    } catch (e) {
      err = e;
    }
    expect(isDragonflyError(err) && err.code).toBe('DF_ERR_SECRET_FILE');
    // The file is left for the operator to restore or delete: never silently replaced.
    expect(fs.readFileSync(path.join(dir, 'server.secret'), 'utf8')).toBe(text);
  });

  it('an empty key could forge tokens; the stored key cannot be guessed from a token', () => {
    const dir = tempDir();
    const secret = loadOrCreateSecret(dir);
    const forged = workflowToken(Buffer.alloc(0), 'wf-a');
    expect(verifyWorkflowToken(secret, 'wf-a', forged)).toBe(false);
    expect(verifyWorkflowToken(secret, 'wf-a', workflowToken(secret, 'wf-a'))).toBe(true);
  });
});
