// Template variables: ${machine.name}-style references inside template strings. `$${` writes a literal `${`.
// ${server.url} is left in place: the boot server substitutes it when it hands the workflow to Mage.

const REF = /\$?\$\{([^}]*)\}/g;
const LABEL = /^machine\.labels\.(.+)$/;
const FIXED = new Set(['machine.name', 'machine.memorableName', 'machine.mac', 'disk', 'image.url', 'server.url']);

export interface VariableRef {
  expr: string;
  /** Offset of `${` in the string. */
  index: number;
}

export function findVariables(text: string): VariableRef[] {
  const out: VariableRef[] = [];
  for (const m of text.matchAll(REF)) {
    if (m[0].startsWith('$$')) continue;
    out.push({ expr: m[1]!.trim(), index: m.index });
  }
  return out;
}

export function isKnownVariable(expr: string): boolean {
  return FIXED.has(expr) || (LABEL.test(expr) && expr.length > 'machine.labels.'.length);
}

/** The label a variable reads, if it reads one. */
export function labelOf(expr: string): string | undefined {
  return LABEL.exec(expr)?.[1];
}

export interface VariableContext {
  machine: { name: string; memorableName: string; mac: string; labels: Record<string, string> };
  disk: string;
  imageUrl?: string;
}

function valueOf(expr: string, ctx: VariableContext): string | undefined {
  switch (expr) {
    case 'machine.name':
      return ctx.machine.name;
    case 'machine.memorableName':
      return ctx.machine.memorableName;
    case 'machine.mac':
      return ctx.machine.mac;
    case 'disk':
      return ctx.disk;
    case 'image.url':
      return ctx.imageUrl;
    case 'server.url':
      return undefined;
  }
  const label = labelOf(expr);
  return label === undefined ? undefined : ctx.machine.labels[label];
}

export function substitute(text: string, ctx: VariableContext): string {
  return text.replace(REF, (whole: string, expr: string) => {
    if (whole.startsWith('$$')) return whole.slice(1);
    return valueOf(expr.trim(), ctx) ?? whole;
  });
}

/** Substitute in every string of a JSON-like value. */
export function substituteDeep<T>(value: T, ctx: VariableContext): T {
  if (typeof value === 'string') return substitute(value, ctx) as T;
  if (Array.isArray(value)) return value.map((v) => substituteDeep(v, ctx)) as T;
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substituteDeep(v, ctx)])) as T;
  }
  return value;
}

/** Every string inside a JSON-like value, with its path. */
export function* stringsIn(value: unknown, path: (string | number)[] = []): Generator<[string, (string | number)[]]> {
  if (typeof value === 'string') yield [value, path];
  else if (Array.isArray(value)) for (let i = 0; i < value.length; i++) yield* stringsIn(value[i], [...path, i]);
  else if (value && typeof value === 'object') for (const [k, v] of Object.entries(value)) yield* stringsIn(v, [...path, k]);
}
