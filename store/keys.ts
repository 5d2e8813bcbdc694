// Where each kind of observed record lives in the store's key space.
import { randomBytes } from 'node:crypto';

export const MACHINES = 'machines/';
export const WORKFLOWS = 'workflows/';
export const AUDIT = 'audit/';
export const EVENTS = 'events/';
export const APPLIED = 'fleet/applied';

export const machineKey = (mac: string) => MACHINES + mac;
export const workflowKey = (id: string) => WORKFLOWS + id;

/**
 * Keys of append-only logs sort by time; the random tail keeps two writers that commit in the same
 * millisecond from ever sharing a key (writers guard these keys with "must not exist").
 */
export function logKey(prefix: typeof AUDIT | typeof EVENTS, at: Date, i = 0): string {
  return `${prefix}${String(at.getTime()).padStart(15, '0')}-${randomBytes(4).toString('hex')}-${String(i).padStart(5, '0')}`;
}
