// Per-workflow tokens: HMAC-SHA256(server secret, workflow id). Nothing to store per workflow, and a
// token is useless for any other workflow or server. The secret lives in the state directory.
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { DragonflyError } from '../schemas/errors.js';

const SECRET_FILE = 'server.secret';
const SECRET_TEXT = /^[0-9a-f]{64}\n?$/;

function parseSecret(file: string, text: string): Buffer {
  // Anything but the exact key is refused: an empty file (a first start on a full disk) would otherwise
  // sign every token with an empty key, silently.
  if (!SECRET_TEXT.test(text)) {
    throw new DragonflyError('DF_ERR_SECRET_FILE', `${file} does not hold a server secret (64 hex digits); it holds ${text.length} bytes`, { path: file });
  }
  return Buffer.from(text.slice(0, 64), 'hex');
}

/** The server secret of a state directory, never creating one (commands that only sign: `dragonfly p2p token`). */
export function readSecret(stateDir: string): Buffer {
  const file = path.join(stateDir, SECRET_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'latin1');
  } catch (e) {
    throw new DragonflyError('DF_ERR_SECRET_FILE', `cannot read the server secret ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { path: file });
  }
  return parseSecret(file, text);
}

/**
 * The server secret, created on first use: written to a temp file, fsynced, then linked into place, so
 * the file is either absent or whole (mode 0600). Several servers sharing a state dir share it.
 */
export function loadOrCreateSecret(stateDir: string): Buffer {
  const file = path.join(stateDir, SECRET_FILE);
  try {
    return parseSecret(file, fs.readFileSync(file, 'latin1'));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  fs.mkdirSync(stateDir, { recursive: true });
  const secret = randomBytes(32);
  const temp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  try {
    const fd = fs.openSync(temp, 'wx', 0o600);
    try {
      fs.writeSync(fd, secret.toString('hex') + '\n');
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    // link(), unlike rename(), fails when another process created the file meanwhile: use theirs then.
    fs.linkSync(temp, file);
    fsyncDir(stateDir);
    return secret;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    return parseSecret(file, fs.readFileSync(file, 'latin1'));
  } finally {
    fs.rmSync(temp, { force: true });
  }
}

function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

export function workflowToken(secret: Buffer, workflowId: string): string {
  return createHmac('sha256', secret).update('workflow:').update(workflowId).digest('hex');
}

/**
 * The token of one image's P2P swarm: peers present it to the scheduler and the seed. Mage gets it with its
 * claimed workflow (only for that workflow's image; not wired yet, issue #13); other peers get it from an operator.
 */
export function p2pToken(secret: Buffer, sha256: string): string {
  return createHmac('sha256', secret).update('p2p:').update(sha256.toLowerCase()).digest('hex');
}

/** Constant-time check of a presented P2P token for an image. */
export function verifyP2pToken(secret: Buffer, sha256: string, presented: string | undefined): boolean {
  if (!presented || !/^[0-9a-f]{64}$/.test(presented)) return false;
  return timingSafeEqual(Buffer.from(p2pToken(secret, sha256), 'hex'), Buffer.from(presented, 'hex'));
}

/** Constant-time check of a presented token. */
export function verifyWorkflowToken(secret: Buffer, workflowId: string, presented: string | undefined): boolean {
  if (!presented || !/^[0-9a-f]{64}$/.test(presented)) return false;
  const expected = Buffer.from(workflowToken(secret, workflowId), 'hex');
  return timingSafeEqual(expected, Buffer.from(presented, 'hex'));
}

/** What the server keeps of a Mage's claim secret. */
export function secretSha256(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/** Constant-time check of a presented claim secret against the stored hash. */
export function claimSecretMatches(storedSha256: string, presented: string | undefined): boolean {
  if (!presented || !/^[0-9a-f]{64}$/.test(presented)) return false;
  return timingSafeEqual(Buffer.from(storedSha256, 'hex'), Buffer.from(secretSha256(presented), 'hex'));
}

/** Constant-time comparison of two secrets of any length (API bearer tokens). */
export function sameSecret(a: string, b: string): boolean {
  const ha = createHmac('sha256', 'compare').update(a).digest();
  const hb = createHmac('sha256', 'compare').update(b).digest();
  return timingSafeEqual(ha, hb) && a.length === b.length;
}
