// Route schemas: a route's params, query string, headers and body are each a definition in schemas/, named by
// $ref and compiled once per process by our own Ajv (fastify's validator compiler), so a request that does
// not match is refused before its handler runs, in our error format. Bodies are JSON as sent: never coerced,
// unknown fields refused where the schema says so. Paths, query strings and headers are text: where a schema
// asks for a number, "5" is read as 5; nothing else is changed.
import type { FastifySchemaCompiler, FastifySchemaValidationError } from 'fastify';
import type { Ajv2020 } from 'ajv/dist/2020.js';
import { DragonflyError, type ErrorCode } from '../schemas/errors.js';
import { createAjv, definitionId, type SchemaName } from '../schemas/validate.js';
import { REQUEST_HINT } from './http-errors.js';

/** The request parts a route schema covers (fastify's names). */
type Part = 'params' | 'querystring' | 'headers' | 'body';
/** fastify's schemaErrorFormatter (app-wide or per route); the Error it returns goes to the error handler. */
type SchemaErrorFormatter = (errors: FastifySchemaValidationError[], part: Part) => Error;

/** A route schema's part: one definition of ours, e.g. def('agent', 'ClaimRequest'). */
export function def(schema: SchemaName, name: string): { $ref: string } {
  return { $ref: definitionId(schema, name) };
}

let ajvs: { json: Ajv2020; text: Ajv2020 } | undefined;

/**
 * fastify's validator compiler. Only `{ $ref }` to a definition in schemas/ is accepted: a schema written
 * inline in a route would be a second copy. Each definition is compiled once, however many routes use it.
 */
export const compileRequestSchema: FastifySchemaCompiler<unknown> = ({ schema, httpPart, method, url }) => {
  const ref = (schema as { $ref?: unknown } | null)?.$ref;
  if (typeof ref !== 'string' || Object.keys(schema as object).length !== 1) {
    throw new Error(`${method} ${url}: the ${httpPart} schema must be def(...) of a definition in schemas/, not an inline schema`);
  }
  ajvs ??= { json: createAjv(), text: createAjv({ coerceTypes: true }) };
  const validate = (httpPart === 'body' ? ajvs.json : ajvs.text).getSchema(ref);
  if (!validate) throw new Error(`${method} ${url}: no schema ${ref}`);
  return validate as ReturnType<FastifySchemaCompiler<unknown>>;
};

const WHERE: Record<Exclude<Part, 'body'>, readonly [whole: string, one: string]> = {
  params: ['the path', 'path parameter'],
  querystring: ['the query string', 'query parameter'],
  headers: ['the headers', 'header'],
};

/**
 * The default answer to a request that fails its schema: 400 DF_ERR_BAD_REQUEST naming the field (a body
 * field by its JSON pointer, as Mage's reports are read), never echoing the value.
 */
export const refuseRequest: SchemaErrorFormatter = (errors, part) => {
  const first: FastifySchemaValidationError | undefined = errors[0];
  const pointer = first?.instancePath ?? '';
  const problem = first?.message ?? 'is invalid';
  if (part === 'body') return new DragonflyError('DF_ERR_BAD_REQUEST', `${pointer || 'body'} ${problem}`);
  const [whole, one] = WHERE[part];
  const field = pointer ? `${one} ${pointer.slice(1).replaceAll('~1', '/').replaceAll('~0', '~')}` : whole;
  return new DragonflyError('DF_ERR_BAD_REQUEST', `${field} ${problem}`, {}, REQUEST_HINT);
};

/** A fixed answer, e.g. 404 for an id that cannot exist: the same body whatever was sent. */
export type Refusal = readonly [code: ErrorCode, message: string];

/**
 * A route's schemaErrorFormatter: fixed answers for a part ('params') or one of its fields ('params/index')
 * that fails its schema; anything else gets refuseRequest's answer.
 */
export function refusing(fixed: Readonly<Record<string, Refusal>>): SchemaErrorFormatter {
  return (errors, part) => {
    const refusal = fixed[`${part}${errors[0]?.instancePath ?? ''}`] ?? fixed[part];
    return refusal ? new DragonflyError(refusal[0], refusal[1]) : refuseRequest(errors, part);
  };
}
