// A server process for bench/boot: `node boot-child.js dragonfly STATE_DIR` or `node boot-child.js hello`.
// Prints its port on stdout, then serves until killed. The dragonfly server takes a read token
// (BENCH_TOKEN) and enough streams and connections from one address for thousands of idle SSE clients.
import { fastify } from 'fastify';
import { buildServer } from '../boot/server.js';
import { LmdbStore } from '../store/lmdb.js';

const [kind, stateDir] = process.argv.slice(2);
if (kind === 'hello') {
  const app = fastify();
  app.get('/boot/:mac', async () => 'hello world\n');
  const address = await app.listen({ host: '127.0.0.1', port: 0 });
  process.stdout.write(new URL(address).port + '\n');
} else {
  const store = LmdbStore.open(stateDir!);
  const app = await buildServer({
    store,
    secret: Buffer.alloc(32, 3),
    serverUrl: 'http://10.0.0.1:8080',
    readToken: 'bench-token',
    events: { maxStreams: 5000, maxStreamsPerAddress: 5000 },
    connections: { maxConnections: 6000, maxConnectionsPerAddress: 6000 },
  });
  const address = await app.listen({ host: '127.0.0.1', port: 0 });
  process.stdout.write(new URL(address).port + '\n');
}
