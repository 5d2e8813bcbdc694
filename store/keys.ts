// Where each kind of observed record lives in the store's key space.
import { randomBytes } from 'node:crypto';

export const MACHINES = 'machines/';
export const WORKFLOWS = 'workflows/';
export const AUDIT = 'audit/';
export const EVENTS = 'events/';
export const APPLIED = 'fleet/applied';
/** The GitOps controller's last report (dragonfly status), and the suspension flag (dragonfly suspend). */
export const CONTROLLER_STATUS = 'controller/status';
export const CONTROLLER_SUSPENDED = 'controller/suspended';

export const machineKey = (mac: string) => MACHINES + mac;
export const workflowKey = (id: string) => WORKFLOWS + id;

/**
 * Keys of append-only logs: `count` keys for entries written together. They sort by time, then by their
 * order in the batch; one random nonce per batch keeps two writers that commit in the same millisecond
 * from ever sharing a key (writers also guard these keys with "must not exist").
 */
export function logKeys(prefix: typeof AUDIT | typeof EVENTS, at: Date, count: number): string[] {
  const head = `${prefix}${String(at.getTime()).padStart(15, '0')}-${randomBytes(4).toString('hex')}`;
  return Array.from({ length: count }, (_, i) => `${head}-${String(i).padStart(6, '0')}`);
}
