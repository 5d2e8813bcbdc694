// Fleets that must load without a single diagnostic: the documentation's own examples.
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { readFleetDir } from '../reconciler/sources/fleet-dir.js';
import { loadFleet } from '../reconciler/load.js';
import { ROOT } from './cli-helpers.js';

describe('documented fleets load clean', () => {
  it('DESIGN.md example, verbatim (bare ${disk} inside a flow mapping included)', () => {
    const r = loadFleet(readFleetDir(path.join(ROOT, 'test/fixtures/valid/design-example')));
    expect(r.diagnostics).toEqual([]);
    const t = r.fleet!.templates.get('ubuntu-24.04')!;
    expect(t.spec.actions[1]).toEqual({ image2disk: { disk: '${disk}' } });
    expect(r.fleet!.machines[0]).toMatchObject({ name: 'web-01', mac: '52:54:00:ab:cd:01', assignment: 'web' });
    expect(r.fleet!.machines[0]!.spec.bmc).toEqual({ driver: 'ipmi', address: '10.0.1.11', port: 623, credentialsRef: 'bmc-rack1' });
  });

  it('fleet.example', () => {
    const r = loadFleet(readFleetDir(path.join(ROOT, 'fleet.example')));
    expect(r.diagnostics).toEqual([]);
    expect(r.fleet!.machines.length).toBeGreaterThanOrEqual(8);
    expect(r.fleet!.templates.size).toBe(3);
    expect(r.fleet!.assignments.size).toBe(3);
  });
});
