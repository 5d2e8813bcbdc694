import { readFileSync } from 'node:fs';
import { expect, test } from 'vitest';
import { parseMeminfo } from './memory.js';

test('MemTotal in kB becomes bytes', () => {
  const text = readFileSync(new URL('../fixtures/firecracker-vm/proc/meminfo', import.meta.url), 'utf8');
  expect(parseMeminfo(text)).toBe(24683656 * 1024);
  expect(parseMeminfo('MemFree:  1 kB\nMemTotal:       65700228 kB\n')).toBe(65700228 * 1024);
});

test('no MemTotal, or a malformed one, gives undefined', () => {
  expect(parseMeminfo('')).toBeUndefined();
  expect(parseMeminfo('MemTotal: lots kB\n')).toBeUndefined();
  expect(parseMeminfo('MemTotal: 12 MB\n')).toBeUndefined();
  expect(parseMeminfo(`MemTotal: ${'9'.repeat(30)} kB\n`)).toBeUndefined();
});
