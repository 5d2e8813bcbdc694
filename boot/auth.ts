// Who may call what. PXE and Mage need no token (their calls are open or carry a workflow's claim); the
// read API and the admin calls need a bearer token: DRAGONFLY_API_TOKEN is admin, DRAGONFLY_READ_TOKEN
// reads only. Hardware inventories and MACs are not public: a MAC is all a boot-network attacker needs.
import type { FastifyRequest } from 'fastify';
import { DragonflyError } from '../schemas/errors.js';
import { sameSecret } from './tokens.js';

export type Role = 'read' | 'admin';

export interface ApiTokens {
  /** Admin: every call. */
  apiToken?: string;
  /** Read only: machines, workflows, events, metrics. */
  readToken?: string;
}

/** The credentials of `Authorization: Bearer X`; RFC 7235 §2.1: the scheme is case-insensitive. */
export function bearerToken(req: FastifyRequest): string | undefined {
  const h = req.headers.authorization;
  if (typeof h !== 'string') return undefined;
  const m = /^bearer +(\S+) *$/i.exec(h);
  return m ? m[1] : undefined;
}

/** The role a presented token has, comparing in constant time; undefined when it is none of ours. */
export function roleOf(presented: string | undefined, tokens: ApiTokens): Role | undefined {
  if (!presented) return undefined;
  // Both compared whatever the first says, so the time taken does not tell which one matched.
  const admin = tokens.apiToken !== undefined && sameSecret(presented, tokens.apiToken);
  const read = tokens.readToken !== undefined && sameSecret(presented, tokens.readToken);
  return admin ? 'admin' : read ? 'read' : undefined;
}

/** Throws 401 without a valid token (none configured: every such call is refused), 403 with too weak a one. */
export function requireRole(req: FastifyRequest, tokens: ApiTokens, needed: Role): Role {
  const role = roleOf(bearerToken(req), tokens);
  if (!role) {
    throw new DragonflyError(
      'DF_ERR_UNAUTHORIZED',
      needed === 'admin' ? 'admin calls need Authorization: Bearer $DRAGONFLY_API_TOKEN' : 'the read API needs Authorization: Bearer TOKEN (DRAGONFLY_READ_TOKEN or DRAGONFLY_API_TOKEN)',
    );
  }
  if (needed === 'admin' && role !== 'admin') throw new DragonflyError('DF_ERR_FORBIDDEN', 'this call needs the admin token; a read token only reads');
  return role;
}
