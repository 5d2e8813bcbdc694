// Validators for every schema in this folder (Ajv, JSON Schema 2020-12). The document schemas come compiled
// ahead of time (validators.generated.ts, Ajv's standalone code from scripts/gen-validators.mjs): a cold CLI
// neither loads Ajv nor compiles a schema. Ajv itself is loaded only to build one (the boot server's route
// schemas, definitions inside a schema).
import { createRequire } from 'node:module';
import type { Ajv2020, ErrorObject, ValidateFunction } from 'ajv/dist/2020.js';
import ajvOptions from './ajv-options.json' with { type: 'json' };
import common from './common.schema.json' with { type: 'json' };
import machine from './machine.schema.json' with { type: 'json' };
import template from './template.schema.json' with { type: 'json' };
import assignment from './assignment.schema.json' with { type: 'json' };
import workflow from './workflow.schema.json' with { type: 'json' };
import hardware from './hardware.schema.json' with { type: 'json' };
import machineRecord from './machine-record.schema.json' with { type: 'json' };
import plan from './plan.schema.json' with { type: 'json' };
import agent from './agent.schema.json' with { type: 'json' };
import api from './api.schema.json' with { type: 'json' };
import p2p from './p2p.schema.json' with { type: 'json' };
import { FORMATS } from './formats.js';
import * as generated from './validators.generated.js';

export const SCHEMAS = { common, machine, template, assignment, workflow, hardware, machineRecord, plan, agent, api, p2p } as const;
export type SchemaName = Exclude<keyof typeof SCHEMAS, 'common'>;

export type SchemaError = ErrorObject;

const require = createRequire(import.meta.url);

let ajv: Ajv2020 | undefined;
const compiled = new Map<SchemaName, ValidateFunction>();

/**
 * A new Ajv holding every schema in this folder and our formats. `coerceTypes` is for text (URL paths, query
 * strings, headers), where "5" means 5; never for JSON documents.
 */
export function createAjv(options: { coerceTypes?: boolean } = {}): Ajv2020 {
  const { Ajv2020: Ajv } = require('ajv/dist/2020.js') as typeof import('ajv/dist/2020.js');
  // ajv-formats is CommonJS: its function is the module, or its default.
  const formats = require('ajv-formats') as { default?: (ajv: Ajv2020) => Ajv2020 } & ((ajv: Ajv2020) => Ajv2020);
  const ajv = new Ajv({ ...ajvOptions, ...options });
  (formats.default ?? formats)(ajv);
  for (const [name, f] of Object.entries(FORMATS)) ajv.addFormat(name, { type: 'string', validate: f.validate });
  for (const s of Object.values(SCHEMAS)) ajv.addSchema(s as object);
  return ajv;
}

function instance(): Ajv2020 {
  return (ajv ??= createAjv());
}

/** The $id of a definition inside a schema, e.g. ('agent', 'RegisterRequest'): what a $ref names. */
export function definitionId(name: SchemaName, def: string): string {
  return `${(SCHEMAS[name] as { $id: string }).$id}#/$defs/${def}`;
}

/** Validate against a definition inside a schema, e.g. ('agent', 'RegisterRequest'). */
export function validateDefinition(name: SchemaName, def: string, value: unknown): SchemaError[] {
  const id = definitionId(name, def);
  let fn = compiledDefs.get(id);
  if (!fn) {
    fn = instance().getSchema(id);
    if (!fn) throw new Error(`schema ${id} is not registered`);
    compiledDefs.set(id, fn);
  }
  return fn(value) ? [] : [...(fn.errors ?? [])];
}
const compiledDefs = new Map<string, ValidateFunction>();

/** The document schemas compiled ahead of time, by SchemaName (scripts/gen-validators.mjs lists the same). */
const AHEAD: Partial<Record<SchemaName, ValidateFunction>> = generated as unknown as Partial<Record<SchemaName, ValidateFunction>>;

/** Validate a value against one of our schemas; returns the list of errors (empty when valid). */
export function validateAgainst(name: SchemaName, value: unknown): SchemaError[] {
  let fn = compiled.get(name) ?? AHEAD[name];
  if (!fn) {
    const id = (SCHEMAS[name] as { $id: string }).$id;
    fn = instance().getSchema(id);
    if (!fn) throw new Error(`schema ${name} is not registered`);
    compiled.set(name, fn);
  }
  return fn(value) ? [] : [...(fn.errors ?? [])];
}
