// What the API shows of a stored record: never a secret's hash, whoever asks.
import type { Workflow } from '../schemas/types.js';

export function publicWorkflow(wf: Workflow): Workflow {
  if (!wf.claim) return wf;
  const { secretSha256: _hidden, ...claim } = wf.claim;
  return { ...wf, claim: claim as Workflow['claim'] };
}
