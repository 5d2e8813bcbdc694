// The image server of bench/p2p, in its own process: one file, GET with or without a Range, every byte
// through one token bucket (the origin's uplink, shared by all its connections). Prints its port, then, when
// its stdin closes, the bytes it sent as JSON; a line `reset` on stdin prints them too and starts again at 0.
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { TokenBucket } from '../p2p/rate.js';

const [file, rateText] = process.argv.slice(2);
const image = fs.readFileSync(file!);
const rate = Number(rateText);
const bucket = new TokenBucket({ rate, burst: Math.max(64 * 1024, rate / 8) });
const SLICE = 64 * 1024;
let sent = 0;

const server = http.createServer(async (req, res) => {
  const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  let from = 0;
  let to = image.length - 1;
  if (m) {
    from = Number(m[1]);
    if (m[2]) to = Math.min(Number(m[2]), image.length - 1);
    res.writeHead(206, { 'content-length': to - from + 1, 'content-range': `bytes ${from}-${to}/${image.length}`, 'accept-ranges': 'bytes' });
  } else res.writeHead(200, { 'content-length': image.length, 'accept-ranges': 'bytes' });
  const gone = new AbortController();
  res.once('close', () => gone.abort());
  try {
    for (let at = from; at <= to; at += SLICE) {
      const part = image.subarray(at, Math.min(at + SLICE, to + 1));
      await bucket.take(part.length, gone.signal);
      sent += part.length;
      if (!res.write(part)) await new Promise((r) => res.once('drain', r));
    }
    res.end();
  } catch {
    res.destroy();
  }
});
server.keepAliveTimeout = 60_000;
server.listen(0, '127.0.0.1', () => process.stdout.write(`${(server.address() as AddressInfo).port}\n`));
let input = '';
process.stdin.on('data', (d: Buffer) => {
  input += d.toString();
  if (input.includes('reset\n')) {
    input = input.replace('reset\n', '');
    process.stdout.write(`${JSON.stringify({ sent })}\n`);
    sent = 0;
  }
});
process.stdin.on('end', () => {
  process.stdout.write(`${JSON.stringify({ sent })}\n`);
  server.closeAllConnections();
  server.close(() => process.exit(0));
});
