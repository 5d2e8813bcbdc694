// The guard under attack, with real sockets on 127.0.0.1: idle TCP connections that never send a byte,
// more than the caps allow, and a client from another loopback address (127.0.0.2) that must still be served.
import http from 'node:http';
import net from 'node:net';
import { fastify, type FastifyInstance } from 'fastify';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { guardConnections, type ConnectionGuardOptions } from './connection-guard.js';

const cleanups: Array<() => Promise<unknown> | void> = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!();
});

async function guardedApp(options: ConnectionGuardOptions) {
  const app: FastifyInstance = fastify();
  app.get('/', async () => 'ok');
  const lines: Array<Record<string, unknown>> = [];
  const guard = guardConnections(app.server, { log: { warn: (obj) => lines.push(obj as Record<string, unknown>) }, ...options });
  await app.listen({ host: '127.0.0.1', port: 0 });
  cleanups.push(() => app.close());
  return { app, guard, lines, port: (app.server.address() as net.AddressInfo).port };
}

/** Idle raw TCP connections from `from`: connected, never a byte sent. Records which ones the server closed. */
async function idleConnections(port: number, count: number, from: string) {
  const closed = new Set<number>();
  const sockets = await Promise.all(
    Array.from({ length: count }, (_, i) =>
      new Promise<net.Socket>((resolve, reject) => {
        const s = net.connect({ host: '127.0.0.1', port, localAddress: from });
        s.on('error', () => {}); // a reset shows up as 'close'
        s.resume(); // read whatever comes (a 408), or the server's FIN is never seen
        s.on('close', () => closed.add(i));
        s.once('connect', () => resolve(s));
        s.once('error', reject);
      }),
    ),
  );
  cleanups.push(() => sockets.forEach((s) => s.destroy()));
  return { sockets, closed };
}

function get(port: number, from: string, path = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, localAddress: from, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}

const socketClosed = (s: net.Socket) => new Promise<void>((resolve) => (s.closed ? resolve() : s.once('close', () => resolve())));

describe('guardConnections', () => {
  it('closes idle connections over the per-address cap at once; another address still gets 200', async () => {
    const { guard, lines, port, app } = await guardedApp({ maxConnectionsPerAddress: 20, maxConnections: 1000, headersTimeoutMs: 60_000, requestTimeoutMs: 60_000 });
    const { sockets, closed } = await idleConnections(port, 30, '127.0.0.1');

    // The 10 over the cap are closed by the server; the first 20 are held (headersTimeout is far away).
    await vi.waitFor(() => expect({ closed: closed.size, refused: guard.stats().refused }).toEqual({ closed: 10, refused: 10 }), { timeout: 5000 });
    expect(guard.stats()).toEqual({ open: 20, addresses: 1, refused: 10, refusedOverTotal: 0, refusedOverAddress: 10, timedOut: 0 });

    // The attacker's address gets nothing more, even a well-formed request; another address is served.
    await expect(get(port, '127.0.0.1')).rejects.toThrow(/socket hang up|ECONNRESET/);
    await expect(get(port, '127.0.0.2')).resolves.toEqual({ status: 200, body: 'ok' });

    // One log line for the burst (two if it straddled a 10 s window), and every refusal counted in them.
    expect(lines.length).toBeGreaterThanOrEqual(1);
    expect(lines.length).toBeLessThanOrEqual(2);
    expect(lines[0]).toMatchObject({ address: '127.0.0.1', reason: '20 open from this address' });

    // Closing the idle ones frees the address's budget.
    sockets.forEach((s) => s.destroy());
    await vi.waitFor(() => expect(guard.stats().open).toBe(0), { timeout: 5000 });
    await expect(get(port, '127.0.0.1')).resolves.toEqual({ status: 200, body: 'ok' });

    await app.close();
    const refused = guard.stats().refused;
    expect(lines.reduce((sum, l) => sum + (l.refused as number), 0)).toBe(refused);
  });

  it('caps connections in total across addresses', async () => {
    const { guard, port } = await guardedApp({ maxConnectionsPerAddress: 10, maxConnections: 15, headersTimeoutMs: 60_000, requestTimeoutMs: 60_000 });
    await idleConnections(port, 10, '127.0.0.1');
    await vi.waitFor(() => expect(guard.stats().open).toBe(10), { timeout: 5000 });
    const second = await idleConnections(port, 10, '127.0.0.2');
    await vi.waitFor(() => expect(second.closed.size).toBe(5), { timeout: 5000 });
    expect(guard.stats()).toEqual({ open: 15, addresses: 2, refused: 5, refusedOverTotal: 5, refusedOverAddress: 0, timedOut: 0 });
  });

  it('closes connections that send nothing, trickle their headers, or trickle their next kept-alive request', async () => {
    // Node's own sweep kept out of the way (it misses some of these anyway): the guard's deadline alone closes them.
    const { port, guard } = await guardedApp({ headersTimeoutMs: 1000, requestTimeoutMs: 2000, keepAliveTimeoutMs: 500, checkIntervalMs: 600_000 });
    const { sockets } = await idleConnections(port, 4, '127.0.0.1');
    const [silent, oneByte, slowloris, keptAlive] = sockets as [net.Socket, net.Socket, net.Socket, net.Socket];
    // A single byte, then nothing: next to a silent connection, Node 20's own sweep misses both.
    oneByte.write('G');
    // Slowloris: a byte of header every 100 ms, so no idle timer ever fires.
    slowloris.write('GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ');
    const drips = [setInterval(() => slowloris.writable && slowloris.write('X'), 100)];
    cleanups.push(() => drips.forEach(clearInterval));
    // A well-behaved first request, then the next one trickled on the kept-alive connection.
    let answered = '';
    keptAlive.on('data', (c: Buffer) => (answered += c.toString('latin1')));
    keptAlive.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await vi.waitFor(() => expect(answered).toMatch(/^HTTP\/1\.1 200[^]*\r\n\r\nok$/), { timeout: 5000 });
    keptAlive.write('GET / HTTP/1.1\r\n');
    drips.push(setInterval(() => keptAlive.writable && keptAlive.write('X-A: b\r\n'), 100));

    await Promise.all(sockets.map(socketClosed));
    await vi.waitFor(() => expect(guard.stats().open).toBe(0), { timeout: 5000 });
    expect(guard.stats().timedOut).toBe(4);
  });

  it('guards a plain node http server that already listens: caps and deadlines apply to new connections', async () => {
    const server = http.createServer((_req, res) => res.end('ok'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise((resolve) => server.close(resolve)));
    // Node's sweep started at listen() with its 30 s default; the guard's own deadline does not wait for it.
    const guard = guardConnections(server, { headersTimeoutMs: 1000, requestTimeoutMs: 1000, maxConnectionsPerAddress: 5 });
    const { sockets, closed } = await idleConnections((server.address() as net.AddressInfo).port, 6, '127.0.0.1');
    await vi.waitFor(() => expect(closed.size).toBe(6), { timeout: 8000, interval: 100 });
    await Promise.all(sockets.map(socketClosed));
    expect(guard.stats()).toMatchObject({ open: 0, refused: 1 });
  });

  it('never cuts a response: an SSE stream and a long poll outlive requestTimeout, headersTimeout and keepAliveTimeout', async () => {
    const app = fastify();
    app.get('/events', (_req, reply) => {
      reply.raw.writeHead(200, { 'content-type': 'text/event-stream' });
      let n = 0;
      const t = setInterval(() => {
        reply.raw.write(`data: ${++n}\n\n`);
        if (n === 8) {
          clearInterval(t);
          reply.raw.end();
        }
      }, 300);
    });
    app.get('/poll', async () => {
      await new Promise((r) => setTimeout(r, 2500));
      return 'late';
    });
    // Every limit far below the ~2.5 s the responses take, and checked often.
    guardConnections(app.server, { headersTimeoutMs: 500, requestTimeoutMs: 500, keepAliveTimeoutMs: 500, checkIntervalMs: 100 });
    await app.listen({ host: '127.0.0.1', port: 0 });
    cleanups.push(() => app.close());
    const port = (app.server.address() as net.AddressInfo).port;

    const [events, poll] = await Promise.all([get(port, '127.0.0.1', '/events'), get(port, '127.0.0.1', '/poll')]);
    expect(events.status).toBe(200);
    expect(events.body.match(/^data: \d+$/gm)).toEqual(['1', '2', '3', '4', '5', '6', '7', '8'].map((n) => `data: ${n}`));
    expect(poll).toEqual({ status: 200, body: 'late' });
  }, 15_000);

  it('refuses nonsensical options', () => {
    const server = http.createServer();
    expect(() => guardConnections(server, { maxConnectionsPerAddress: 0 })).toThrow(RangeError);
    expect(() => guardConnections(server, { headersTimeoutMs: 20_000, requestTimeoutMs: 10_000 })).toThrow(/exceeds requestTimeoutMs/);
  });
});
