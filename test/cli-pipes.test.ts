// Output is an interface: a command writes all of its output through a slow pipe, whatever its size, and
// a reader that leaves early (`| head -1`) ends it quietly. Before, output through a pipe was cut at 64 KiB.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeFleet } from '../bench/fleet-generator.js';
import { BIN, ROOT, tempDir } from './cli-helpers.js';

let work: string;
let fleet: string;

beforeAll(() => {
  work = tempDir('dragonfly-pipes-');
  fleet = path.join(work, 'fleet');
  writeFleet(fleet, { machines: 4000, templates: 2, assignments: 4 });
});
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

/** A shell pipeline with the real binary on its left. */
function pipeline(command: string): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync('bash', ['-o', 'pipefail', '-c', command], {
    cwd: ROOT,
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1', DRAGONFLY_STATE: '', DF: `${process.execPath} ${BIN}` },
    timeout: 120_000,
    maxBuffer: 256 * 1024 * 1024,
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('output through pipes', () => {
  it('plan --json of 4,000 machines reaches a reader that starts two seconds late, whole', () => {
    const state = path.join(work, 'state-json');
    const r = pipeline(`$DF plan --json --fleet ${fleet} --state ${state} | (sleep 2; python3 -c 'import json,sys; p=json.load(sys.stdin); print(len(p["changes"]), sys.stdin.read() == "")')`);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout.trim()).toBe('4000 True');
  }, 120_000);

  it('plan --markdown and the text plan arrive whole through a slow pipe too', () => {
    const state = path.join(work, 'state-text');
    const direct = pipeline(`$DF plan --fleet ${fleet} --state ${state} > ${work}/plan.txt`);
    expect(direct.status).toBe(0);
    const slow = pipeline(`$DF plan --fleet ${fleet} --state ${state} | (sleep 2; cat)`);
    expect(slow.stdout).toBe(fs.readFileSync(`${work}/plan.txt`, 'utf8'));
    expect(slow.stdout.length).toBeGreaterThan(64 * 1024);
    expect(slow.stdout).toMatch(/Plan: 4000 to add, 0 to change, 0 to reimage, 0 to retire\.\n$/);
  }, 120_000);

  it('a reader that leaves early ends the command quietly: no EPIPE, no stack trace', () => {
    const state = path.join(work, 'state-head');
    for (const args of ['plan', 'plan --json', 'plan --markdown']) {
      const r = pipeline(`$DF ${args} --fleet ${fleet} --state ${state} | head -1`);
      expect(r.stdout.split('\n').filter(Boolean)).toHaveLength(1);
      expect(r.stderr, args).toBe('');
    }
  }, 120_000);
});
