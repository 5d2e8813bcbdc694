// A TFTP server process for bench/tftp: `node tftp-child.js ROOT`. Prints its port, then serves until
// killed; on SIGUSR2 it prints its stats as one JSON line. Its own process, as in.tftpd has one: the bench
// spawns hundreds of clients, and a server sharing the bench's event loop would wait behind every spawn.
import { startTftpServer } from '../boot/tftp/server.js';
import { directorySource } from '../boot/tftp/source.js';

const root = process.argv[2]!;
// Every client is 127.0.0.1 here: the per-host cap would otherwise refuse the 200 concurrent clients.
const server = await startTftpServer({ host: '127.0.0.1', port: 0, source: directorySource(root), maxTransfersPerHost: 1000 });
process.stdout.write(`${server.address().port}\n`);
process.on('SIGUSR2', () => process.stdout.write(JSON.stringify(server.stats()) + '\n'));
process.on('SIGTERM', () => void server.close().then(() => process.exit(0)));
