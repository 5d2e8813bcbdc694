// What the boot server is built from: its users (cli/serve, tests, benches) fill this in; the routes read it.
// Apart from server.ts so the routes never import the module that registers them.
import type { FastifyBaseLogger } from 'fastify';
import type { Store } from '../store/store.js';
import type { ConnectionGuardOptions } from './connection-guard.js';
import type { EventHubOptions } from './event-hub.js';
import type { P2pSeed } from './p2p-hub.js';
import type { TftpStats } from './metrics.js';
import type { TokenBucket } from '../p2p/rate.js';
import type { WebhookEvent } from './webhooks.js';

export interface BootServerDeps {
  store: Store;
  /** Signs workflow tokens (boot/tokens.ts). */
  secret: Buffer;
  /** This server as machines reach it, e.g. http://10.0.0.1:8080. */
  serverUrl: string;
  /** Mage's vmlinuz and initrd (dragonfly mage build --out DIR). */
  mageDir?: string;
  /** iPXE binaries (Debian's ipxe package: /usr/lib/ipxe). */
  ipxeDir?: string;
  /** Bearer token for admin calls (and reads); without one, every admin call is refused. */
  apiToken?: string;
  /** Bearer token for the read API only (machines, workflows, events, metrics). */
  readToken?: string;
  /** Bounds of the event stream (boot/event-hub.ts). */
  events?: EventHubOptions;
  /** Events kept in the store's event log; older ones are deleted (default 100,000). */
  maxEvents?: number;
  /** Connection caps and timeouts of the HTTP server (boot/connection-guard.ts). */
  connections?: Omit<ConnectionGuardOptions, 'log'>;
  /** Discovered machines (seen, not in git) the store may hold; new MACs beyond it are not recorded (default 10,000). */
  maxDiscovered?: number;
  /** Extra kernel arguments for Mage. */
  kernelArgs?: string;
  /** New MACs recorded per source address per minute (default 60). */
  discoveryPerMinute?: number;
  /** How often running workflows are checked against their timeout (ms, default 5000; 0: never). */
  timeoutSweepMs?: number;
  /** Agent registrations per source address per minute (default 120). */
  registrationsPerMinute?: number;
  tftpStats?: () => TftpStats;
  /** Shared secret for POST /api/v1/webhooks/*; without one, every webhook is refused (403). */
  webhookSecret?: string;
  /** The branch whose pushes trigger onWebhookPush (`main` or `refs/heads/main`); default: any branch. */
  webhookBranch?: string;
  /** Called, not awaited, for each verified push to webhookBranch. It must return quickly and coalesce
   * bursts (a fetch already running or queued absorbs further calls): webhooks are only rate-limited. */
  onWebhookPush?: (event: WebhookEvent) => void | Promise<unknown>;
  /** Webhook calls per source address per minute (default 60). */
  webhooksPerMinute?: number;
  /** The seed peer of P2P image distribution (p2p/seed.ts); without one, no P2P API is served. */
  p2pSeed?: P2pSeed;
  /** Paces the seed's piece uploads: this server's own uplink for P2P (`--p2p-upload-limit`); default unlimited. */
  p2pUploadRate?: TokenBucket;
  logger?: FastifyBaseLogger | boolean;
}
