// The desired state, as loaded from git: validated, references resolved. Built by load.ts.
import type { MachineSpec, TemplateSpec } from '../schemas/types.js';

export interface FleetMachine {
  name: string;
  /** Normalised boot MAC. */
  mac: string;
  memorableName: string;
  labels: Record<string, string>;
  /** The spec as written, with MACs normalised. */
  spec: MachineSpec;
  /** The assignment that matches this machine, if any. */
  assignment?: string;
  /** The fleet file that declares it. */
  file: string;
}

export interface FleetTemplate {
  name: string;
  spec: TemplateSpec;
  /** The fleet file that declares it. */
  file: string;
}

export interface FleetAssignment {
  name: string;
  template: string;
  generation: number;
  maxParallel?: number;
  maxFailures?: number;
  /** Names of the machines it matches, in fleet order. */
  machines: string[];
  /** The fleet file that declares it. */
  file: string;
}

export interface Fleet {
  /** git commit SHA, or sha256:<hex> of a directory's YAML files. */
  revision: string;
  machines: FleetMachine[];
  templates: Map<string, FleetTemplate>;
  assignments: Map<string, FleetAssignment>;
}
