// Per-workflow tokens: HMAC-SHA256(server secret, workflow id). Nothing to store per workflow, and a
// token is useless for any other workflow or server. The secret lives in the state directory.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

const SECRET_FILE = 'server.secret';

/** The server secret, created (0600) on first use. Several servers sharing a state dir share it. */
export function loadOrCreateSecret(stateDir: string): Buffer {
  const file = path.join(stateDir, SECRET_FILE);
  try {
    return Buffer.from(fs.readFileSync(file, 'utf8').trim(), 'hex');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  fs.mkdirSync(stateDir, { recursive: true });
  const secret = randomBytes(32);
  try {
    // 'wx': if another process created it meanwhile, use theirs.
    fs.writeFileSync(file, secret.toString('hex') + '\n', { mode: 0o600, flag: 'wx' });
    return secret;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    return Buffer.from(fs.readFileSync(file, 'utf8').trim(), 'hex');
  }
}

export function workflowToken(secret: Buffer, workflowId: string): string {
  return createHmac('sha256', secret).update('workflow:').update(workflowId).digest('hex');
}

/** Constant-time check of a presented token. */
export function verifyWorkflowToken(secret: Buffer, workflowId: string, presented: string | undefined): boolean {
  if (!presented || !/^[0-9a-f]{64}$/.test(presented)) return false;
  const expected = Buffer.from(workflowToken(secret, workflowId), 'hex');
  return timingSafeEqual(expected, Buffer.from(presented, 'hex'));
}

/** Constant-time comparison of two secrets of any length (API bearer tokens). */
export function sameSecret(a: string, b: string): boolean {
  const ha = createHmac('sha256', 'compare').update(a).digest();
  const hb = createHmac('sha256', 'compare').update(b).digest();
  return timingSafeEqual(ha, hb) && a.length === b.length;
}
