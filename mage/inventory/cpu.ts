// CPU model, cores and threads from /proc/cpuinfo.
import type { HardwareReport } from '../../schemas/types.js';
import { readText, under } from './read.js';
import { cleanText, compact } from './text.js';

export type CpuInfo = NonNullable<HardwareReport['cpu']>;

// The model's key differs by architecture: x86 and arm32 "model name", old arm "Processor", mips
// "cpu model", powerpc "cpu". arm64 prints none (the model is then unknown, not guessed).
const MODEL_KEYS = ['model name', 'Processor', 'cpu model', 'cpu'];

/** Parse /proc/cpuinfo: threads are "processor" stanzas, cores are distinct (physical id, core id) pairs. */
export function parseCpuinfo(text: string): CpuInfo | undefined {
  const stanzas = text
    .split(/\n\s*\n/)
    .map((block) => {
      const fields = new Map<string, string>();
      for (const line of block.split('\n')) {
        const colon = line.indexOf(':');
        if (colon > 0) fields.set(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
      }
      return fields;
    })
    .filter((fields) => fields.size > 0);
  const processors = stanzas.filter((s) => s.has('processor') && /^\d+$/.test(s.get('processor') ?? ''));

  let model: string | undefined;
  for (const key of MODEL_KEYS) {
    const found = stanzas.find((s) => s.get(key))?.get(key);
    if (found) {
      model = cleanText(found.replace(/\s+/g, ' '), 256);
      break;
    }
  }

  const threads = processors.length;
  const coreIds = new Set<string>();
  for (const p of processors) {
    const core = p.get('core id');
    if (core !== undefined) coreIds.add(`${p.get('physical id') ?? '0'}:${core}`);
  }
  // Without core ids (arm, powerpc) every listed processor is a core: those kernels print no SMT siblings.
  const cores = coreIds.size > 0 ? coreIds.size : threads;

  if (model === undefined && threads === 0) return undefined;
  return compact({ model, cores: threads > 0 ? cores : undefined, threads: threads > 0 ? threads : undefined });
}

export async function collectCpu(root: string): Promise<CpuInfo | undefined> {
  const text = await readText(under(root, '/proc/cpuinfo'));
  return text === undefined ? undefined : parseCpuinfo(text);
}
