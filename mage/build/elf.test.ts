import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { elfNeeds } from './elf.js';

describe('elfNeeds', () => {
  it('reads the interpreter and DT_NEEDED of a program as readelf does', () => {
    const data = fs.readFileSync(process.execPath);
    const needs = elfNeeds(data)!;
    const readelf = spawnSync('readelf', ['-d', '-l', process.execPath], { encoding: 'utf8' });
    if (readelf.status === 0) {
      expect(needs.needed).toEqual([...readelf.stdout.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]));
      expect(needs.interp).toBe(/Requesting program interpreter: ([^\]]+)\]/.exec(readelf.stdout)?.[1]);
    }
    expect(needs.needed).toContain('libc.so.6');
  });

  it('is undefined for a script and refuses a truncated ELF', () => {
    expect(elfNeeds(Buffer.from('#!/bin/sh\necho hi\n'.padEnd(80, ' ')))).toBeUndefined();
    const head = Buffer.from(fs.readFileSync(process.execPath).subarray(0, 64));
    head.writeUInt16LE(2000, 0x38); // more program headers than the file holds
    expect(() => elfNeeds(head)).toThrow(RangeError);
  });
});
