// Test helper: temp directories and things to close, undone after every test of the file that calls it
// (it registers its own afterEach), closers in reverse order, then the directories.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach } from 'vitest';

export interface Disposables {
  /** A new directory under the OS temp dir, removed after the test. */
  tempDir(tag: string): string;
  /** Run `close` after the test (last deferred, first closed). */
  defer(close: () => unknown): void;
}

export function disposables(prefix: string): Disposables {
  const dirs: string[] = [];
  const closers: (() => unknown)[] = [];
  afterEach(async () => {
    for (const close of closers.splice(0).reverse()) await close();
    for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
  });
  return {
    tempDir(tag) {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-${tag}-`));
      dirs.push(dir);
      return dir;
    },
    defer: (close) => void closers.push(close),
  };
}
