// Prometheus metrics (prom-client), one registry per server so tests and several servers never collide.
import { Counter, Gauge, Registry } from 'prom-client';
import type { Workflow } from '../schemas/types.js';
import type { Store } from '../store/store.js';
import { WORKFLOWS } from '../store/keys.js';

export type { TftpStats } from './tftp/server.js';
import type { TftpStats } from './tftp/server.js';

export type Fate = 'discovery' | 'imaging' | 'localboot';

export interface BootMetrics {
  registry: Registry;
  /** Count one HTTP request: a map increment, because this runs on every PXE request. */
  request(route: string, status: number): void;
  bootScript(fate: Fate): void;
  /** A gauge read when scraped. */
  gauge(name: string, help: string, read: () => number): void;
}

export function createMetrics(store: Store, tftpStats?: () => TftpStats): BootMetrics {
  const registry = new Registry();
  // Counted in plain maps and added to prom-client's counters when scraped: hashing label objects on
  // every request costs more than the request's own work.
  const requests = new Map<string, { labels: { route: string; status: string }; n: number; reported: number }>();
  const fates: Record<Fate, { n: number; reported: number }> = { discovery: { n: 0, reported: 0 }, imaging: { n: 0, reported: 0 }, localboot: { n: 0, reported: 0 } };
  new Counter({
    name: 'dragonfly_http_requests_total',
    help: 'HTTP requests by route and status',
    labelNames: ['route', 'status'],
    registers: [registry],
    collect() {
      for (const c of requests.values()) {
        if (c.n > c.reported) this.inc(c.labels, c.n - c.reported);
        c.reported = c.n;
      }
    },
  });
  new Counter({
    name: 'dragonfly_boot_scripts_total',
    help: 'Boot scripts served, by boot fate',
    labelNames: ['fate'],
    registers: [registry],
    collect() {
      for (const [fate, c] of Object.entries(fates)) {
        this.inc({ fate }, c.n - c.reported);
        c.reported = c.n;
      }
    },
  });
  new Gauge({
    name: 'dragonfly_workflows',
    help: 'Workflows in the store, by state',
    labelNames: ['state'],
    registers: [registry],
    async collect() {
      const counts = await store.read((snap) => {
        const c: Record<string, number> = { pending: 0, running: 0, succeeded: 0, failed: 0, 'timed-out': 0 };
        for (const r of snap.list<Workflow>(WORKFLOWS)) c[r.value.state] = (c[r.value.state] ?? 0) + 1;
        return c;
      });
      for (const [state, n] of Object.entries(counts)) this.set({ state }, n);
    },
  });
  if (tftpStats) {
    const stat = (name: string, help: string, pick: (s: TftpStats) => number, kind: 'counter' | 'gauge') =>
      new Gauge({ name, help: `${help}${kind === 'counter' ? ' (monotonic)' : ''}`, registers: [registry], collect() { this.set(pick(tftpStats())); } });
    stat('dragonfly_tftp_transfers_total', 'TFTP transfers started', (s) => s.transfers, 'counter');
    stat('dragonfly_tftp_bytes_total', 'TFTP payload bytes acknowledged by clients', (s) => s.bytes, 'counter');
    stat('dragonfly_tftp_errors_total', 'TFTP errors: failed transfers, refused requests, malformed datagrams', (s) => s.errors, 'counter');
    stat('dragonfly_tftp_unconfirmed_total', 'TFTP transfers fully sent whose final ACK never came', (s) => s.unconfirmed, 'counter');
    stat('dragonfly_tftp_active_transfers', 'TFTP transfers in progress', (s) => s.active, 'gauge');
  }
  return {
    registry,
    request(route, status) {
      const key = `${status} ${route}`;
      const c = requests.get(key);
      if (c) c.n++;
      else requests.set(key, { labels: { route, status: String(status) }, n: 1, reported: 0 });
    },
    bootScript(fate) {
      fates[fate].n++;
    },
    gauge(name, help, read) {
      new Gauge({ name, help, registers: [registry], collect() { this.set(read()); } });
    },
  };
}
