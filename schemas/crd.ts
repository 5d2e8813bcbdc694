// Kubernetes CustomResourceDefinitions (apiextensions.k8s.io/v1) built from the same JSON Schemas, so
// the fleet can live as custom resources too. Structural-schema rules: no $ref, every object typed,
// no additionalProperties:false beside properties (the API server prunes unknown fields instead).
import { SCHEMAS } from './validate.js';

type Json = Record<string, unknown>;
const GROUP = 'dragonfly.computer';
const byId = new Map(Object.values(SCHEMAS).map((s) => [(s as { $id: string }).$id, s as Json]));
// Conditionals (allOf of if/then) have no structural equivalent; the server-side validation keeps them.
const DROP = new Set(['$schema', '$id', '$defs', 'title', 'propertyNames', 'allOf', 'if', 'then']);
const K8S_FORMATS = new Set(['date-time', 'uri', 'int32', 'int64']);

function resolveRef(ref: string, base: Json): { schema: Json; base: Json } {
  const [file, pointer = ''] = ref.split('#');
  const doc = file ? byId.get(new URL(file, base.$id as string).href) : base;
  if (!doc) throw new Error(`unresolved $ref ${ref}`);
  let node: unknown = doc;
  for (const part of pointer.split('/').filter(Boolean)) node = (node as Json)[part];
  return { schema: node as Json, base: doc };
}

function structural(schema: Json, base: Json): Json {
  let s: Json = schema;
  if (typeof s.$ref === 'string') {
    const { schema: target, base: targetBase } = resolveRef(s.$ref, base);
    const { $ref: _r, ...rest } = s;
    return structural({ ...structural(target, targetBase), ...rest }, targetBase);
  }
  const out: Json = {};
  for (const [k, v] of Object.entries(s)) {
    if (DROP.has(k)) continue;
    if (k === 'const') out.enum = [v];
    else if (k === 'format') {
      if (K8S_FORMATS.has(String(v))) out.format = v;
    } else if (k === 'properties') {
      out.properties = Object.fromEntries(Object.entries(v as Json).map(([p, ps]) => [p, structural(ps as Json, base)]));
    } else if (k === 'items' || (k === 'additionalProperties' && typeof v === 'object')) {
      out[k] = structural(v as Json, base);
    } else if (k === 'additionalProperties') {
      continue;
    } else if (k === 'oneOf' || k === 'anyOf') {
      const branches = (v as Json[]).map((b) => structural(b, base));
      // A union with a type (anyOf [X, null]) is not structural; a nullable X is.
      if (branches.some((b) => b.type === 'null')) {
        Object.assign(out, branches.find((b) => b.type !== 'null'), { nullable: true });
      } else out[k] = branches;
    } else out[k] = v;
  }
  if (out.enum && !out.type) out.type = typeof (out.enum as unknown[])[0] === 'number' ? 'number' : typeof (out.enum as unknown[])[0];
  if ((out.properties || out.maxProperties) && !out.type) out.type = 'object';
  if (out.type === 'object' && !out.properties && !out.additionalProperties) out['x-kubernetes-preserve-unknown-fields'] = true;
  if (Object.keys(out).filter((k) => k !== 'description').length === 0) out['x-kubernetes-preserve-unknown-fields'] = true;
  return out;
}

function crd(kind: string, plural: string, shortNames: string[], spec: Json, description: string): Json {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${plural}.${GROUP}` },
    spec: {
      group: GROUP,
      scope: 'Namespaced',
      names: { kind, plural, singular: kind.toLowerCase(), listKind: `${kind}List`, shortNames },
      versions: [
        {
          name: 'v1',
          served: true,
          storage: true,
          schema: {
            openAPIV3Schema: {
              type: 'object',
              description,
              properties: { apiVersion: { type: 'string' }, kind: { type: 'string' }, metadata: { type: 'object' }, spec },
            },
          },
        },
      ],
    },
  };
}

export function customResourceDefinitions(): Json[] {
  const spec = (s: Json, def: string) => structural({ $ref: `#/$defs/${def}` }, s);
  const m = SCHEMAS.machine as Json;
  const t = SCHEMAS.template as Json;
  const a = SCHEMAS.assignment as Json;
  const w = SCHEMAS.workflow as Json;
  return [
    crd('Machine', 'machines', ['dfm'], spec(m, 'MachineSpec'), String(m.description)),
    crd('Template', 'templates', ['dft'], spec(t, 'TemplateSpec'), String(t.description)),
    crd('Assignment', 'assignments', ['dfa'], spec(a, 'AssignmentSpec'), String(a.description)),
    crd('Workflow', 'workflows', ['dfw'], structural(w, w), String(w.description)),
  ];
}
