// Connection limits for the boot server's HTTP side. The boot network is hostile: ~20,000 half-open
// connections (connect, never send a byte) exhaust the process's file descriptors, and then neither HTTP
// nor TFTP can accept anything. So: a cap on open connections in total and per remote address (over it, a
// connection is destroyed the moment it is accepted), and a deadline for every connection to deliver its
// next request, so that a silent or trickling one gives its descriptor back.
//
// Why our own deadline and not only Node's headersTimeout: Node 20 checks headersTimeout/requestTimeout
// from a list of parsers swept every `connectionsCheckingInterval`, and that sweep misses connections
// (seen on 20.20: a silent connection next to one that sent a single byte is never closed). Node's
// timeouts are still set, for what they do catch (a slow request body, with a 408).
//
// What is never limited: a response. headersTimeout and requestTimeout count until the request is
// *received* (Node stops checking a parser at message complete), and our deadline is suspended while a
// request is in flight, so SSE streams and long polls stay open for as long as the route keeps them.
import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { WindowLimiter } from './limiter.js';

export interface ConnectionGuardOptions {
  /** Open connections in total; more are destroyed on accept (default 4096). Keep well under `ulimit -n`: TFTP and the store need descriptors too. */
  maxConnections?: number;
  /** Open connections per remote address (default 256). Raise it for an admin host holding many SSE streams. */
  maxConnectionsPerAddress?: number;
  /** Time a new connection has to deliver its request headers (default 10 s); also Node's headersTimeout. */
  headersTimeoutMs?: number;
  /** Node's requestTimeout: time to receive a whole request, headers and body (default 30 s). Never limits the response. */
  requestTimeoutMs?: number;
  /** Idle time allowed between requests on a kept-alive connection (default 5 s; fastify's own is 72 s). */
  keepAliveTimeoutMs?: number;
  /** How often Node sweeps its request timeouts (default 30 s, Node's own): the sweep walks every open connection, which with thousands of event streams shows in p99 (bench/boot), and the guard's own deadline does not need it. */
  checkIntervalMs?: number;
  /** pino-compatible; at most one line per 10 s, carrying how many were refused since the last one. */
  log?: { warn(obj: object, msg: string): void };
}

export interface ConnectionGuardStats {
  /** Connections open now (refused ones excluded). */
  open: number;
  /** Distinct remote addresses with an open connection. */
  addresses: number;
  /** Connections destroyed on accept since the guard was applied: refusedOverTotal + refusedOverAddress. */
  refused: number;
  refusedOverTotal: number;
  refusedOverAddress: number;
  /** Connections destroyed for not delivering a request in time (silent, trickling, idle past keep-alive). */
  timedOut: number;
}

export interface ConnectionGuard {
  stats(): ConnectionGuardStats;
}

export const CONNECTION_GUARD_DEFAULTS = {
  maxConnections: 4096,
  maxConnectionsPerAddress: 256,
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 30_000,
  keepAliveTimeoutMs: 5_000,
  checkIntervalMs: 30_000,
} as const;

/** Events that take the place of 'request' when the application listens for them (node:http docs). */
const OTHER_REQUEST_EVENTS = ['upgrade', 'connect', 'checkContinue', 'checkExpectation'] as const;

interface Tracked {
  address: string;
  /** Requests emitted whose response has not closed yet; the deadline runs only at 0. */
  inFlight: number;
  deadline: NodeJS.Timeout | undefined;
}

/** Harden `server` (fastify's `app.server`, an http or https server) in place, before or after listen(). */
export function guardConnections(server: HttpServer, options: ConnectionGuardOptions = {}): ConnectionGuard {
  const o = { ...CONNECTION_GUARD_DEFAULTS, ...definedOnly(options) };
  for (const [name, value] of Object.entries(o)) {
    if (typeof value === 'number' && (!Number.isInteger(value) || value < 1)) throw new RangeError(`guardConnections: ${name} must be a positive integer, got ${value}`);
  }
  // Node refuses this combination in createServer(); the properties set below are not checked.
  if (o.headersTimeoutMs > o.requestTimeoutMs) throw new RangeError(`guardConnections: headersTimeoutMs (${o.headersTimeoutMs}) exceeds requestTimeoutMs (${o.requestTimeoutMs})`);

  server.headersTimeout = o.headersTimeoutMs;
  server.requestTimeout = o.requestTimeoutMs;
  server.keepAliveTimeout = o.keepAliveTimeoutMs;
  // Missing from @types/node 20, present since Node 18.12; read by Node when the server starts listening.
  (server as HttpServer & { connectionsCheckingInterval: number }).connectionsCheckingInterval = o.checkIntervalMs;
  if (server.listening) restartTimeoutChecks(server);

  const tracked = new Map<Socket, Tracked>();
  const perAddress = new Map<string, number>();
  const counts = { overTotal: 0, overAddress: 0, timedOut: 0 };
  const log = new RefusalLog(options.log);

  // Until its next request arrives, a connection holds a descriptor for nothing: give it `ms`.
  const arm = (socket: Socket, t: Tracked, ms: number) => {
    t.deadline = setTimeout(() => {
      // A request we cannot see (an upgrade the app listens for) may be under way: leave that to Node.
      if (socket.bytesRead > 0 && OTHER_REQUEST_EVENTS.some((e) => server.listenerCount(e) > 0)) return;
      counts.timedOut++;
      socket.destroy();
    }, ms).unref();
  };

  server.on('connection', (socket: Socket) => {
    // Undefined when the peer already reset it: nothing is held, nothing to count.
    const raw = socket.remoteAddress;
    if (raw === undefined) return;
    const address = normalise(raw);
    const mine = perAddress.get(address) ?? 0;
    const over = tracked.size >= o.maxConnections ? 'overTotal' : mine >= o.maxConnectionsPerAddress ? 'overAddress' : undefined;
    if (over) {
      counts[over]++;
      socket.destroy();
      log.refused({ address, reason: over === 'overTotal' ? `${o.maxConnections} open in total` : `${o.maxConnectionsPerAddress} open from this address`, open: tracked.size });
      return;
    }
    const t: Tracked = { address, inFlight: 0, deadline: undefined };
    tracked.set(socket, t);
    perAddress.set(address, mine + 1);
    arm(socket, t, o.headersTimeoutMs);
    socket.once('close', () => {
      clearTimeout(t.deadline);
      tracked.delete(socket);
      const n = perAddress.get(address)! - 1;
      if (n === 0) perAddress.delete(address);
      else perAddress.set(address, n);
    });
  });

  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const socket = req.socket;
    const t = tracked.get(socket);
    if (!t) return; // accepted before the guard was applied
    t.inFlight++;
    clearTimeout(t.deadline);
    t.deadline = undefined;
    // 'close' follows 'finish' and also comes when the response is aborted: exactly once per response.
    res.once('close', () => {
      t.inFlight--;
      // Node's keep-alive timer closes an idle connection; one that trickles its next request resets
      // that timer, so it gets the idle allowance plus the time to send headers, and no more.
      if (t.inFlight === 0 && !socket.destroyed) arm(socket, t, o.keepAliveTimeoutMs + o.headersTimeoutMs);
    });
  });
  server.once('close', () => log.flush());

  return {
    stats: () => ({
      open: tracked.size,
      addresses: perAddress.size,
      refused: counts.overTotal + counts.overAddress,
      refusedOverTotal: counts.overTotal,
      refusedOverAddress: counts.overAddress,
      timedOut: counts.timedOut,
    }),
  };
}

// Node reads connectionsCheckingInterval once, in the 'listening' listener it registers in the Server
// constructor; that listener clears the running sweep before starting a new one, so calling it again is
// how the new interval reaches a server that already listens. Absent in some future Node: the old
// interval stays, and our own deadline (above) does not depend on it.
function restartTimeoutChecks(server: HttpServer): void {
  const setup = server.listeners('listening').find((f) => f.name === 'setupConnectionsTracking');
  setup?.call(server);
}

/** A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d: one host, one budget. */
function normalise(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([k, v]) => v !== undefined && k !== 'log')) as Partial<T>;
}

/** A flood of refused connections must not become a flood of log lines: one per 10 s, the rest counted. */
class RefusalLog {
  private readonly limiter = new WindowLimiter(1, 10_000);
  private pending = 0;

  constructor(private readonly log: ConnectionGuardOptions['log']) {}

  refused(detail: { address: string; reason: string; open: number }): void {
    if (!this.log) return;
    this.pending++;
    if (!this.limiter.take('refused')) return;
    this.log.warn({ ...detail, refused: this.pending }, 'HTTP connections over the cap closed (refused: how many since the last such line)');
    this.pending = 0;
  }

  flush(): void {
    if (this.log && this.pending > 0) this.log.warn({ refused: this.pending }, 'HTTP connections over the cap closed (refused: how many since the last such line)');
    this.pending = 0;
  }
}
