import { describe, expect, it } from 'vitest';
import { customResourceDefinitions } from './crd.js';

type Json = Record<string, unknown>;

/** Every rule of a Kubernetes structural schema that our generator must respect, checked node by node. */
function structuralProblems(node: Json, path: string, out: string[]): string[] {
  for (const bad of ['$ref', '$defs', 'const', 'propertyNames', '$schema', '$id']) {
    if (bad in node) out.push(`${path}: ${bad}`);
  }
  if (node.properties && node.additionalProperties !== undefined) out.push(`${path}: properties with additionalProperties`);
  if (node.properties && node.type !== 'object') out.push(`${path}: properties without type: object`);
  if (!node.type && !node['x-kubernetes-preserve-unknown-fields'] && !path.match(/\/(oneOf|anyOf)\/\d+$/)) out.push(`${path}: no type`);
  for (const [k, v] of Object.entries((node.properties as Json) ?? {})) structuralProblems(v as Json, `${path}/${k}`, out);
  if (node.items) structuralProblems(node.items as Json, `${path}/items`, out);
  if (typeof node.additionalProperties === 'object') structuralProblems(node.additionalProperties as Json, `${path}/additionalProperties`, out);
  return out;
}

describe('customResourceDefinitions', () => {
  const crds = customResourceDefinitions();

  it('defines Machine, Template, Assignment and Workflow in dragonfly.computer/v1', () => {
    expect(crds.map((c) => (c.spec as Json).names)).toMatchObject([{ kind: 'Machine' }, { kind: 'Template' }, { kind: 'Assignment' }, { kind: 'Workflow' }]);
    for (const c of crds) {
      expect((c.spec as Json).group).toBe('dragonfly.computer');
      expect(((c.spec as Json).versions as Json[])[0]).toMatchObject({ name: 'v1', served: true, storage: true });
    }
  });

  it('builds structural schemas from the JSON Schemas', () => {
    for (const c of crds) {
      const schema = (((c.spec as Json).versions as Json[])[0]!.schema as Json).openAPIV3Schema as Json;
      expect(structuralProblems(schema, (c.metadata as Json).name as string, [])).toEqual([]);
    }
  });

  it('keeps the fields and enums of the schemas', () => {
    const machine = ((((crds[0]!.spec as Json).versions as Json[])[0]!.schema as Json).openAPIV3Schema as Json).properties as Json;
    const spec = (machine.spec as Json).properties as Json;
    expect(Object.keys(spec)).toEqual(['mac', 'macs', 'disk', 'bmc', 'power', 'protected', 'netboot']);
    expect(((spec.bmc as Json).properties as Json).driver).toMatchObject({ type: 'string', enum: ['ipmi', 'redfish', 'wol', 'proxmox'] });
    expect((spec.bmc as Json).required).toEqual(['driver']);
  });
});
