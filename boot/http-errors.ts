// The JSON body of every API error, and the hint for requests that are malformed before any route reads them.
import { ERRORS } from '../schemas/errors.js';

/** The JSON body of every API error. */
export function errorBody(code: keyof typeof ERRORS, message: string, hint: string = ERRORS[code].hint) {
  return { error: { code, message, hint } };
}

/** For 4xx errors that are not about an agent body: the request line or headers. */
export const REQUEST_HINT = "check the request's method, URL and headers (docs/api.md)";
