import { readFleetDir } from '../reconciler/sources/fleet-dir.js';
import { loadFleet } from '../reconciler/load.js';
import { formatDiagnostic } from '../reconciler/diagnostics.js';
import { requireFleetArg } from './fleet.js';
import type { Io } from './output.js';
import { progressBar } from './progress.js';

export const validateHelp = `Usage: dragonfly validate --fleet DIR [--json]

Load every *.yaml / *.yml under DIR, validate each document against its schema and resolve references
(assignment → template, selector → machines, template variables). Every problem is printed as
  path/relative/to/file.yaml:LINE:COL: DF_ERR_CODE message
    hint: what to do
Exit status: 0 valid (warnings allowed), 1 invalid.

  --fleet DIR   the fleet directory
  --json        print {"valid", "revision", "diagnostics": [...]} on stdout
`;

export async function validateCommand(opts: { fleet?: string; json?: boolean }, io: Io): Promise<number> {
  const files = readFleetDir(requireFleetArg(opts.fleet));
  const bar = progressBar('Validating fleet files');
  const result = loadFleet(files, { onProgress: (done, total) => bar.update(done, total) });
  bar.stop();
  const valid = result.fleet !== undefined;
  if (opts.json) {
    io.out(JSON.stringify({ valid, revision: result.fleet?.revision ?? null, diagnostics: result.diagnostics }, null, 2) + '\n');
  } else {
    for (const d of result.diagnostics) io.err(formatDiagnostic(d) + '\n');
    if (valid) {
      const f = result.fleet!;
      io.out(`The fleet is valid: ${f.machines.length} machines, ${f.templates.size} templates, ${f.assignments.size} assignments (${f.revision}).\n`);
    } else {
      const n = result.diagnostics.filter((d) => d.severity === 'error').length;
      io.err(`${n} error${n > 1 ? 's' : ''}.\n`);
    }
  }
  return valid ? 0 : 1;
}
