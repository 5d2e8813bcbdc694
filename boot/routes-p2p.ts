// The P2P scheduler's HTTP API and the seed's piece server (docs/p2p.md). Every call carries the image's
// P2P token (boot/tokens.ts p2pToken) or the admin token: the swarm of an image is open to the peers the
// server gave that token to, nobody else. What a peer says is data to check, never trusted: its piece
// server must be on the address it calls from, and its pieces are verified by whoever downloads them.
import { Readable } from 'node:stream';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { Bitfield } from '../p2p/bitfield.js';
import { DragonflyError } from '../schemas/errors.js';
import { bearerToken, requireRole, roleOf } from './auth.js';
import type { BootServerDeps } from './deps.js';
import { errorBody } from './http-errors.js';
import type { P2pHub } from './p2p-hub.js';
import { def, refusing } from './route-schemas.js';
import { verifyP2pToken } from './tokens.js';

interface ImageParams {
  sha256: string;
}
interface PeerParams extends ImageParams {
  peerId: string;
}

/** Seconds a peer waits before asking again for a manifest still being prepared. */
const PREPARING_RETRY_S = 2;

export const p2pRoutes: FastifyPluginAsync<{ deps: BootServerDeps; hub: P2pHub }> = async (app, { deps, hub }) => {
  /** The image's token, or the admin token: anything else is refused before the body is read. */
  const swarmMember = async (req: FastifyRequest<{ Params: ImageParams }>) => {
    const presented = bearerToken(req);
    if (verifyP2pToken(deps.secret, req.params.sha256, presented)) return;
    if (roleOf(presented, deps) === 'admin') return;
    throw new DragonflyError('DF_ERR_UNAUTHORIZED', "P2P calls need Authorization: Bearer with the image's P2P token (given to the peers that fetch it) or the admin token");
  };
  const notFound = refusing({ params: ['DF_ERR_NOT_FOUND', 'no such image or peer'] });
  const image = { schema: { params: def('api', 'P2pImageParams') }, schemaErrorFormatter: notFound, preHandler: swarmMember };
  const peer = { schema: { params: def('api', 'P2pPeerParams') }, schemaErrorFormatter: notFound, preHandler: swarmMember };
  const now = () => Date.now();

  /** 404 for an image the hub is not distributing (yet): the peer asks for the manifest first. */
  const schedulerOf = (sha256: string, reply: FastifyReply) => {
    const s = hub.scheduler(sha256);
    if (!s) void reply.code(404).send(errorBody('DF_ERR_NOT_FOUND', 'this image is not being distributed: GET its manifest first'));
    return s;
  };

  app.get<{ Params: ImageParams }>('/api/v1/p2p/images/:sha256/manifest', image, async (req, reply) => {
    const answer = await hub.manifestFor(req.params.sha256);
    switch (answer.kind) {
      case 'ready':
        return reply.header('cache-control', 'no-store').send(answer.manifest);
      case 'preparing':
        return reply.code(202).header('retry-after', String(PREPARING_RETRY_S)).send({ state: 'preparing', retryAfterSeconds: PREPARING_RETRY_S });
      case 'failed': {
        const e = answer.error;
        const code = e instanceof DragonflyError ? e.code : 'DF_ERR_INTERNAL';
        req.log.warn({ sha256: req.params.sha256, err: e }, 'p2p: the seed could not prepare the image');
        // A bad image is the template's problem: say which code, not the origin's details.
        return reply.code(502).send(errorBody(code === 'DF_ERR_INTERNAL' ? 'DF_ERR_IMAGE_SHA256' : code, 'the seed could not read this image from its origin; fetch it directly'));
      }
      case 'unknown':
        return reply.code(404).send(errorBody('DF_ERR_NOT_FOUND', 'no workflow names this image'));
    }
  });

  app.post<{ Params: ImageParams; Body: { peerId: string; url: string; have: string } }>(
    '/api/v1/p2p/images/:sha256/peers',
    { ...image, schema: { ...image.schema, body: def('api', 'P2pJoin') } },
    async (req, reply) => {
      const s = schedulerOf(req.params.sha256, reply);
      if (!s) return reply;
      // A peer points others only at itself: the URL's address must be the caller's.
      if (new URL(req.body.url).hostname !== req.ip) {
        return reply.code(400).send(errorBody('DF_ERR_BAD_REQUEST', 'url must be on the address this request comes from'));
      }
      const pieces = s.stats().pieces;
      const have = Bitfield.fromBase64(req.body.have, pieces); // DF_ERR_P2P_BITFIELD (400) when malformed
      const result = hub.mutate(req.params.sha256, (sch) => sch.announce(req.body.peerId, req.body.url, have, now()))!;
      if (result.kind === 'full') return reply.code(503).header('retry-after', '30').send(errorBody('DF_ERR_P2P_BUSY', `this image already has ${result.maxPeers} peers: fetch it directly`));
      if (result.kind === 'dropped') return reply.code(403).send(errorBody('DF_ERR_FORBIDDEN', 'this peer was dropped for this image (it served a bad piece or timed out)'));
      return { revision: result.revision };
    },
  );

  app.post<{ Params: PeerParams; Body: { pieces: number[]; uploads?: number } }>(
    '/api/v1/p2p/images/:sha256/peers/:peerId/have',
    { ...peer, schema: { ...peer.schema, body: def('api', 'P2pHave') } },
    async (req, reply) => {
      if (!schedulerOf(req.params.sha256, reply)) return reply;
      const result = hub.mutate(req.params.sha256, (s) => {
        if (req.body.uploads !== undefined) s.load(req.params.peerId, req.body.uploads, now());
        return s.have(req.params.peerId, req.body.pieces, now());
      })!;
      if (result.kind === 'unknown') return reply.code(404).send(errorBody('DF_ERR_NOT_FOUND', 'unknown peer: announce again'));
      return reply.code(204).send();
    },
  );

  app.get<{ Params: PeerParams; Querystring: { since?: number; wait?: number } }>(
    '/api/v1/p2p/images/:sha256/peers/:peerId/parents',
    { ...peer, schema: { ...peer.schema, querystring: def('api', 'P2pParentsQuery') } },
    async (req, reply) => {
      const s = schedulerOf(req.params.sha256, reply);
      if (!s) return reply;
      if (!s.touch(req.params.peerId, now())) return reply.code(404).send(errorBody('DF_ERR_NOT_FOUND', 'unknown peer: announce again'));
      // Long poll: held until the image's state moves past `since` (a piece held, a peer joined or dropped).
      const abort = new AbortController();
      req.raw.once('close', () => {
        abort.abort();
        // Closed before its answer: the peer is gone (killed, cut off) or reconnecting; the hub gives it a grace.
        if (!reply.raw.headersSent) hub.abandoned(req.params.sha256, req.params.peerId);
      });
      const since = req.query.since ?? -1;
      await hub.waitForChange(req.params.sha256, since, (req.query.wait ?? 0) * 1000, abort.signal);
      const current = hub.scheduler(req.params.sha256);
      if (!current) return reply.code(404).send(errorBody('DF_ERR_NOT_FOUND', 'this image is no longer distributed: GET its manifest again'));
      const pieces = current.stats().pieces;
      const parents = current.parentsFor(req.params.peerId, now()).map((p) => {
        const have = new Bitfield(pieces);
        for (let i = 0; i < pieces; i++) if (p.has(i)) have.set(i);
        return { peerId: p.id, url: p.url, load: p.load, have: have.toBase64() };
      });
      return { revision: current.revision, parents };
    },
  );

  app.post<{ Params: PeerParams; Body: { pieces: number[] } }>(
    '/api/v1/p2p/images/:sha256/peers/:peerId/origin',
    { ...peer, schema: { ...peer.schema, body: def('api', 'P2pOriginRequest') } },
    async (req, reply) => {
      if (!schedulerOf(req.params.sha256, reply)) return reply;
      return hub.mutate(req.params.sha256, (s) => s.originGrant(req.params.peerId, req.body.pieces, now()))!;
    },
  );

  app.post<{ Params: PeerParams; Body: { parent: string; piece: number; kind: 'bad' | 'timeout' } }>(
    '/api/v1/p2p/images/:sha256/peers/:peerId/report',
    { ...peer, schema: { ...peer.schema, body: def('api', 'P2pReport') } },
    async (req, reply) => {
      if (!schedulerOf(req.params.sha256, reply)) return reply;
      const result = hub.mutate(req.params.sha256, (s) => s.report(req.params.peerId, req.body.parent, req.body.piece, req.body.kind, now()))!;
      if (result.kind === 'dropped') req.log.warn({ sha256: req.params.sha256, parent: req.body.parent, reporter: req.params.peerId, kind: req.body.kind }, 'p2p: parent dropped for this image');
      return result;
    },
  );

  app.delete<{ Params: PeerParams }>('/api/v1/p2p/images/:sha256/peers/:peerId', peer, async (req, reply) => {
    if (!schedulerOf(req.params.sha256, reply)) return reply;
    hub.mutate(req.params.sha256, (s) => s.leave(req.params.peerId));
    return reply.code(204).send();
  });

  // Preheat by hand (`dragonfly p2p preheat`): an admin names an image; the seed reads it now.
  app.post<{ Body: { url: string; sha256: string } }>(
    '/api/v1/p2p/preheat',
    { schema: { body: def('api', 'P2pPreheat') }, preHandler: async (req) => void requireRole(req, deps, 'admin') },
    async (req, reply) => {
      const image = { url: req.body.url, sha256: req.body.sha256 };
      void hub.preheat(image).catch((err: unknown) => req.log.warn({ sha256: image.sha256, err }, 'p2p: preheat failed'));
      req.log.info({ sha256: image.sha256 }, 'p2p: preheat');
      return reply.code(202).send({ sha256: image.sha256, state: hub.scheduler(image.sha256) ? 'ready' : 'preparing' });
    },
  );

  // For operators (and the console's /p2p page): each image, its state, and its swarm's figures.
  app.get('/api/v1/p2p/images', { preHandler: async (req) => void requireRole(req, deps, 'read') }, async () => ({ images: hub.list() }));

  // The seed's piece server: the same path every peer serves (p2p/piece-server.ts).
  app.get<{ Params: { sha256: string; index: number } }>(
    '/p2p/:sha256/pieces/:index',
    { schema: { params: def('api', 'P2pPieceParams') }, schemaErrorFormatter: refusing({ params: ['DF_ERR_P2P_NO_PIECE', 'no such piece'] }), preHandler: swarmMember },
    async (req, reply) => {
      const bytes = await hub.seedPiece(req.params.sha256, req.params.index);
      if (!bytes) return reply.code(404).send(errorBody('DF_ERR_P2P_NO_PIECE', 'no such piece'));
      reply.type('application/octet-stream').header('cache-control', 'no-store');
      const rate = deps.p2pUploadRate;
      if (!rate) return reply.send(bytes);
      // Paced through the server's P2P uplink bucket, a slice at a time; a client that goes away stops it.
      const gone = new AbortController();
      req.raw.once('close', () => gone.abort());
      const slice = Math.max(16 * 1024, Math.min(1024 * 1024, Math.floor(rate.rate / 16)));
      const paced = Readable.from(
        (async function* () {
          for (let at = 0; at < bytes.length; at += slice) {
            const part = bytes.subarray(at, at + slice);
            await rate.take(part.length, gone.signal);
            yield part;
          }
        })(),
      );
      return reply.header('content-length', bytes.length).send(paced);
    },
  );
};
