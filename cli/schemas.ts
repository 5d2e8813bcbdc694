import { stringify } from 'yaml';
import { customResourceDefinitions } from '../schemas/crd.js';
import { SCHEMAS } from '../schemas/validate.js';
import { DragonflyError } from '../schemas/errors.js';
import type { Io } from './output.js';

export const schemasHelp = `Usage: dragonfly schemas [--crd] [NAME]

Print the JSON Schemas (draft 2020-12) of Dragonfly's resources, or with --crd the Kubernetes
CustomResourceDefinitions (group dragonfly.computer, version v1) built from them, as YAML.
NAME: one of ${Object.keys(SCHEMAS).join(', ')}.
`;

export async function schemasCommand(opts: { crd?: boolean; name?: string }, io: Io): Promise<number> {
  if (opts.crd) {
    io.out(customResourceDefinitions().map((c) => stringify(c, { lineWidth: 0 })).join('---\n'));
    return 0;
  }
  if (opts.name) {
    const s = (SCHEMAS as Record<string, unknown>)[opts.name];
    if (!s) throw new DragonflyError('DF_ERR_USAGE', `no schema named ${opts.name}`, {}, `use one of ${Object.keys(SCHEMAS).join(', ')}`);
    io.out(JSON.stringify(s, null, 2) + '\n');
    return 0;
  }
  io.out(JSON.stringify(SCHEMAS, null, 2) + '\n');
  return 0;
}
