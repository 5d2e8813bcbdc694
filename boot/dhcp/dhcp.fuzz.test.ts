// Hostile input, fuzzed (issue #12 item 13): property-based fuzzing of the proxyDHCP decoder and policy with
// fast-check. Each property runs 10,000 inputs from a fixed seed, so a failure replays in CI; fast-check
// shrinks it to a minimal counterexample. The invariants are the ones packet.ts, policy.ts and the README
// state: decoding is total (a typed `{ ok: false }`, never an exception), the decision is total, and an
// answer is a well-formed BOOTREPLY that echoes nothing of the request but the RFC 2131 header fields and a
// well-formed option 97, within the 576-byte IP datagram every client must accept (RFC 2131 §2).
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  BOOTREPLY,
  BOOTREQUEST,
  decodePacket,
  decodeSubOptions,
  decodeUserClass,
  encodePacket,
  encodeUserClass,
  HEADER_LENGTH,
  MAGIC_COOKIE,
  MESSAGE_TYPE,
  OPTION,
  readClientInfo,
  type DecodeErrorReason,
  type DhcpPacket,
} from './packet.js';
import { answerFor, configProblems, decide, type PolicyConfig, type RequestContext } from './policy.js';
import { CONFIG, FIXTURES, fixtureBytes, pxeRequest, withChanges } from './test-builders.js';

const RUNS = 10_000;
const REASONS: readonly DecodeErrorReason[] = ['too-short', 'not-dhcp', 'bad-header', 'truncated-option', 'bad-overload', 'bad-option'];
/** RFC 2131 §2: a client must accept a 576-byte IP datagram; less 20 (IPv4) and 8 (UDP) for the DHCP message. */
const MAX_REPLY_BYTES = 576 - 20 - 8;
/** Every option a reply may carry (README "Who gets what"); anything else would be an echo. */
const REPLY_OPTIONS = new Set<number>([OPTION.MESSAGE_TYPE, OPTION.SERVER_ID, OPTION.VENDOR_CLASS, OPTION.VENDOR_OPTIONS, OPTION.CLIENT_UUID, OPTION.TFTP_SERVER, OPTION.BOOTFILE, OPTION.IPXE_ENCAP]);

/** The configurations answers are checked against: the default, and one using every knob (valid per configProblems). */
const CONFIGS: readonly PolicyConfig[] = [
  CONFIG,
  {
    serverIp: '192.168.77.1',
    httpUrl: 'http://192.168.77.1:8080/',
    tftpServer: '192.168.77.2',
    bootfiles: { bios: 'undionly.kpxe', efi64: 'snponly.efi', efi32: 'ipxe-i386.efi', arm64: 'ipxe-arm64.efi', byArch: { 10: 'http://192.168.77.1:8080/ipxe/arm32.efi', 99: 'other.efi' } },
    scriptPath: '/boot.ipxe',
    ipxeHttpPath: '/ipxe/',
    chainloadIpxeRoms: true,
  },
];

// ---- generators ----

const ip = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)).map((b) => b.join('.'));
/** Option codes the decoder and the policy give a meaning to, plus any code at all. */
const code = fc.oneof(fc.constantFrom(0, 43, 52, 53, 54, 55, 57, 60, 61, 77, 93, 94, 97, 175, 255), fc.nat(255));
/** One option as it may appear on the wire: honest, or with a length that lies about its value. */
const wireOption = fc.oneof(
  { weight: 4, arbitrary: fc.tuple(code, fc.uint8Array({ maxLength: 40 })).map(([c, v]) => [c, v.length, ...v]) },
  { weight: 1, arbitrary: fc.tuple(code, fc.nat(255), fc.uint8Array({ maxLength: 40 })).map(([c, len, v]) => [c, len, ...v]) },
  { weight: 1, arbitrary: fc.constantFrom([0], [255], [52, 1, 1], [52, 1, 2], [52, 1, 3], [52, 1, 0], [52, 1, 7], [52, 2, 1, 1]) },
);
const optionArea = fc.array(wireOption, { maxLength: 30 }).map((xs) => Uint8Array.from(xs.flat()));

/** Values for the options a PXE decision reads, well-formed or not. */
const vendorClass = fc.oneof(
  fc.constantFrom('PXEClient:Arch:00000:UNDI:002001', 'PXEClient:Arch:00007:UNDI:003016', 'HTTPClient:Arch:00016:UNDI:003000', 'PXEClient', 'HTTPClient', 'PXEClient:Arch:99999', 'pxeclient', 'MSFT 5.0'),
  fc.string({ maxLength: 60 }).map((s) => (s.length % 2 ? `PXEClient${s}` : s)),
);
const userClass = fc.oneof(
  fc.constant(Buffer.from('iPXE')),
  fc.constant(encodeUserClass(['iPXE'])),
  fc.array(fc.string({ minLength: 1, maxLength: 10, unit: 'binary-ascii' }), { maxLength: 3 }).map((cs) => encodeUserClass(cs)),
  fc.uint8Array({ maxLength: 20 }).map((b) => Buffer.from(b)),
);
const bytesUpTo = (n: number) => fc.uint8Array({ maxLength: n }).map((b) => Buffer.from(b));
/** A replacement value for an option the policy reads: the right shape, the wrong shape, or noise (RFC 3396 sizes too). */
const optionValue = fc.oneof(
  bytesUpTo(20),
  fc.constantFrom(Buffer.from([1]), Buffer.from([3]), Buffer.from([0, 0]), Buffer.from([0, 7]), Buffer.from([0, 16]), Buffer.from([10, 0, 0, 1])),
  fc.uint8Array({ minLength: 17, maxLength: 17 }).map((b) => Buffer.from([0, ...b.subarray(1)])),
  bytesUpTo(600),
);

/** A request as a PXE ROM, UEFI HTTP boot or iPXE builds it, with options replaced, added or dropped. */
const structuredRequest: fc.Arbitrary<DhcpPacket> = fc
  .record({
    type: fc.oneof({ weight: 8, arbitrary: fc.constantFrom(MESSAGE_TYPE.DISCOVER, MESSAGE_TYPE.REQUEST) }, { weight: 1, arbitrary: fc.nat(255) }),
    mac: fc.uint8Array({ minLength: 6, maxLength: 6 }).map((b) => [...b].map((x) => x.toString(16).padStart(2, '0')).join(':')),
    xid: fc.nat(),
    vendorClass: fc.option(vendorClass, { nil: null, freq: 10 }),
    arch: fc.option(fc.oneof({ weight: 8, arbitrary: fc.constantFrom(0, 6, 7, 9, 10, 11, 15, 16, 19, 99) }, { weight: 1, arbitrary: fc.nat(65535) }), { nil: null }),
    userClass: fc.option(userClass, { nil: undefined }),
    ipxe: fc.boolean(),
    serverId: fc.option(fc.oneof({ weight: 4, arbitrary: fc.constantFrom(CONFIG.serverIp, '192.168.77.1') }, { weight: 1, arbitrary: ip }), { nil: undefined }),
    requestedIp: fc.option(ip, { nil: undefined }),
    ciaddr: fc.oneof(fc.constant('0.0.0.0'), ip),
    giaddr: fc.oneof(fc.constant('0.0.0.0'), ip),
    // Half the requests keep their options as built; the rest get some replaced or dropped.
    set: fc.oneof(
      fc.constant<Array<[number, Buffer]>>([]),
      fc.array(fc.tuple(fc.oneof(fc.constantFrom(43, 53, 54, 57, 60, 77, 93, 94, 97, 175), fc.integer({ min: 1, max: 254 }).map((c) => (c === OPTION.OVERLOAD ? 51 : c))), optionValue), { minLength: 1, maxLength: 4 }),
    ),
    drop: fc.oneof(fc.constant<number[]>([]), fc.array(fc.constantFrom(53, 57, 60, 93, 94, 97), { minLength: 1, maxLength: 3 })),
    hlen: fc.oneof(fc.constant(6), fc.nat(16)),
    op: fc.oneof({ weight: 9, arbitrary: fc.constant(BOOTREQUEST) }, { weight: 1, arbitrary: fc.constant(BOOTREPLY) }),
  })
  .map((s) => {
    const base = pxeRequest({
      type: s.type,
      mac: s.mac,
      xid: s.xid,
      vendorClass: s.vendorClass,
      arch: s.arch,
      ipxe: s.ipxe,
      ciaddr: s.ciaddr,
      giaddr: s.giaddr,
      ...(s.userClass ? { userClass: s.userClass } : {}),
      ...(s.serverId ? { serverId: s.serverId } : {}),
      ...(s.requestedIp ? { requestedIp: s.requestedIp } : {}),
    });
    return { ...withChanges(base, { set: s.set, drop: s.drop }), hlen: s.hlen, op: s.op };
  });

/** A byte-level edit of a datagram; positions wrap around its length, so every edit applies and shrinks well. */
type Edit = { kind: 'set'; at: number; value: number } | { kind: 'flip'; at: number; bit: number } | { kind: 'truncate'; at: number } | { kind: 'insert'; at: number; bytes: Uint8Array } | { kind: 'delete'; at: number; count: number };
const edit: fc.Arbitrary<Edit> = fc.oneof(
  fc.record({ kind: fc.constant('set' as const), at: fc.nat(), value: fc.nat(255) }),
  fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.nat(7) }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
  fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: fc.uint8Array({ minLength: 1, maxLength: 8 }) }),
  fc.record({ kind: fc.constant('delete' as const), at: fc.nat(), count: fc.integer({ min: 1, max: 8 }) }),
);

function applyEdits(buf: Buffer, edits: readonly Edit[]): Buffer {
  let b = Buffer.from(buf);
  for (const e of edits) {
    if (b.length === 0) break;
    // Edits past the BOOTP header land in the options mostly: that is where the decoder has choices to make.
    const at = e.at % (b.length + (e.kind === 'insert' ? 1 : 0));
    if (e.kind === 'set') b[at] = e.value;
    else if (e.kind === 'flip') b[at] = b[at]! ^ (1 << e.bit);
    else if (e.kind === 'truncate') b = b.subarray(0, at);
    else if (e.kind === 'insert') b = Buffer.concat([b.subarray(0, at), e.bytes, b.subarray(at)]);
    else b = Buffer.concat([b.subarray(0, at), b.subarray(at + e.count)]);
  }
  return b;
}

/** Structured mutations: a valid request (built or captured), encoded, then edited byte by byte. */
const mutatedRequest = fc
  .tuple(
    fc.oneof(
      { weight: 3, arbitrary: structuredRequest.map((p) => encodePacket(p)) },
      { weight: 1, arbitrary: fc.constantFrom(...FIXTURES).map((name) => fixtureBytes(name)) },
    ),
    fc.array(edit, { maxLength: 6 }),
  )
  .map(([buf, edits]) => applyEdits(buf, edits));

/** Datagrams that reach the option decoder: a BOOTP header (cookie mostly right), then random option chains in the options, file and sname areas. */
const headerThenOptions = fc
  .record({
    header: fc.uint8Array({ minLength: HEADER_LENGTH, maxLength: HEADER_LENGTH }),
    op: fc.oneof({ weight: 6, arbitrary: fc.constant(BOOTREQUEST) }, { weight: 1, arbitrary: fc.constantFrom(BOOTREPLY, 0, 3) }),
    hlen: fc.oneof({ weight: 6, arbitrary: fc.constant(6) }, { weight: 1, arbitrary: fc.nat(255) }),
    cookie: fc.oneof({ weight: 9, arbitrary: fc.constant(MAGIC_COOKIE) }, { weight: 1, arbitrary: fc.nat() }),
    file: fc.option(optionArea, { nil: undefined }),
    sname: fc.option(optionArea, { nil: undefined }),
    options: optionArea,
  })
  .map((r) => {
    const head = Buffer.from(r.header);
    head[0] = r.op;
    head[2] = r.hlen;
    if (r.sname) Buffer.from(r.sname.subarray(0, 64)).copy(head, 44);
    if (r.file) Buffer.from(r.file.subarray(0, 128)).copy(head, 108);
    const cookie = Buffer.alloc(4);
    cookie.writeUInt32BE(r.cookie >>> 0);
    return Buffer.concat([head, cookie, r.options]);
  });

const randomBytes = fc.uint8Array({ maxLength: 700 }).map((b) => Buffer.from(b));

const context: fc.Arbitrary<RequestContext> = fc.record({
  port: fc.constantFrom('dhcp' as const, 'pxe' as const),
  mode: fc.constantFrom('proxy' as const, 'full' as const),
  chainedRecently: fc.boolean(),
});

// ---- the invariants ----

/** The boot file names and URLs a configuration can hand out (README "Who gets what"). */
function bootfilesOf(config: PolicyConfig): Set<string> {
  const base = config.httpUrl.replace(/\/+$/, '');
  const files = [config.bootfiles.bios, config.bootfiles.efi64, config.bootfiles.efi32, config.bootfiles.arm64, ...Object.values(config.bootfiles.byArch ?? {})].filter((f): f is string => !!f);
  const httpPath = (config.ipxeHttpPath ?? '/ipxe/').replace(/^\/+/, '');
  return new Set([...files, ...files.map((f) => `${base}/${httpPath}${f}`), `${base}/${(config.scriptPath ?? '/boot.ipxe').replace(/^\/+/, '')}`]);
}

// node:assert rather than expect in the checks below: they run some 50,000 times per property.

/** Decode must be total: a packet, or one of its own typed errors, for any bytes. */
function decodeTotally(buf: Uint8Array) {
  const d = decodePacket(buf); // a throw here fails the property with the datagram as counterexample
  if (!d.ok) {
    assert.ok(REASONS.includes(d.error.reason), `unknown reason ${d.error.reason}`);
    assert.equal(typeof d.error.message, 'string');
    if (d.error.offset !== undefined) assert.ok(d.error.offset >= 0 && d.error.offset <= buf.length, `offset ${d.error.offset} outside the datagram`);
  }
  return d;
}

/** Everything the server does with a decoded request, checked: client info, the decision, the reply on the wire. */
function checkAnswer(req: DhcpPacket, config: PolicyConfig, ctx: RequestContext): 'answered' | 'silent' {
  const info = readClientInfo(req);
  if (!info.ok) assert.ok(REASONS.includes(info.error.reason));
  const d = decide(req, config, ctx);
  if (!d.answer) {
    assert.equal(typeof d.reason, 'string');
    assert.equal(answerFor(req, config, ctx), undefined);
    return 'silent';
  }
  // Who gets an answer at all: a well-formed PXE or HTTP boot DISCOVER or REQUEST, and a proxy answers a
  // REQUEST on 67 only when it names this server.
  assert.ok(info.ok, 'answered a malformed request');
  assert.equal(req.op, BOOTREQUEST);
  const type = req.options.get(OPTION.MESSAGE_TYPE);
  assert.equal(type?.length, 1);
  const isDiscover = type![0] === MESSAGE_TYPE.DISCOVER;
  assert.ok(isDiscover || type![0] === MESSAGE_TYPE.REQUEST, `answered message type ${type![0]}`);
  assert.match(req.options.get(OPTION.VENDOR_CLASS)?.toString('latin1') ?? '', /^(PXEClient|HTTPClient)/);
  if (ctx.mode === 'proxy' && ctx.port === 'dhcp' && !isDiscover) assert.equal(req.options.get(OPTION.SERVER_ID)?.join('.'), config.serverIp);

  const answer = answerFor(req, config, ctx)!;
  assert.ok(bootfilesOf(config).has(answer.bootfile), `bootfile ${answer.bootfile} is not one the configuration names`);
  const wire = encodePacket(answer.packet);
  assert.ok(wire.length <= MAX_REPLY_BYTES, `a reply of ${wire.length} bytes`);
  const back = decodePacket(wire);
  assert.ok(back.ok, 'the reply does not decode');
  const reply = back.packet;
  // RFC 2131 table 3: the header fields copied from the request, and nothing else of it.
  assert.deepEqual(
    { op: reply.op, xid: reply.xid, htype: reply.htype, hlen: reply.hlen, flags: reply.flags, giaddr: reply.giaddr, yiaddr: reply.yiaddr, hops: reply.hops, secs: reply.secs, sname: reply.sname, ciaddr: reply.ciaddr },
    { op: BOOTREPLY, xid: req.xid, htype: req.htype, hlen: req.hlen, flags: req.flags, giaddr: req.giaddr, yiaddr: '0.0.0.0', hops: 0, secs: 0, sname: '', ciaddr: isDiscover ? '0.0.0.0' : req.ciaddr },
  );
  assert.ok(reply.chaddr.equals(req.chaddr), 'chaddr not echoed');
  assert.equal(reply.options.get(OPTION.MESSAGE_TYPE)?.[0], isDiscover ? MESSAGE_TYPE.OFFER : MESSAGE_TYPE.ACK);
  for (const c of reply.options.keys()) assert.ok(REPLY_OPTIONS.has(c), `the reply carries option ${c}`);
  assert.equal(reply.options.get(OPTION.BOOTFILE)?.toString('latin1'), answer.bootfile);
  // Option 97 goes back only in the one shape RFC 4578 §2.3 defines, and then exactly as sent.
  const uuid = req.options.get(OPTION.CLIENT_UUID);
  const echoed = reply.options.get(OPTION.CLIENT_UUID);
  if (uuid && uuid.length === 17 && uuid[0] === 0) assert.ok(echoed?.equals(uuid), 'a well-formed option 97 not echoed as sent');
  else assert.equal(echoed, undefined, 'a misshapen option 97 echoed');
  return 'answered';
}

describe('proxyDHCP under hostile input (fast-check)', () => {
  it('the configurations under test are valid', () => {
    for (const c of CONFIGS) expect(configProblems(c)).toEqual([]);
  });

  it('random bytes: decoding is total, and so are the readers of encapsulated options', () => {
    fc.assert(
      fc.property(fc.oneof(randomBytes, headerThenOptions), (buf) => {
        decodeTotally(buf);
        // The encapsulated-option readers see client bytes too (43, 175, 77): total as well.
        const sub = decodeSubOptions(buf.subarray(0, 300), OPTION.VENDOR_OPTIONS);
        if (!sub.ok) assert.equal(sub.error.reason, 'bad-option');
        for (const c of decodeUserClass(buf.subarray(0, 300))) assert.equal(typeof c, 'string');
      }),
      { numRuns: RUNS, seed: 0x0d4c9001 },
    );
  });

  it('random option chains after a BOOTP header: a decoded packet re-encodes to the same options, and any answer is well-formed', () => {
    let decoded = 0;
    fc.assert(
      fc.property(headerThenOptions, fc.constantFrom(...CONFIGS), context, (buf, config, ctx) => {
        const d = decodeTotally(buf);
        if (!d.ok) return;
        decoded++;
        checkAnswer(d.packet, config, ctx);
        // encodePacket throws RangeError only for programming errors: never for a packet the decoder made.
        const again = decodeTotally(encodePacket(d.packet));
        const byCode = (o: Map<number, Buffer>) => [...o].sort(([a], [b]) => a - b);
        assert.ok(again.ok, 'a decoded packet does not re-encode to a decodable one');
        assert.deepEqual(byCode(again.packet.options), byCode(d.packet.options));
      }),
      { numRuns: RUNS, seed: 0x0d4c9002 },
    );
    // The generator must reach the option decoder, or the property proves little.
    expect(decoded).toBeGreaterThan(RUNS / 10);
  });

  it('structured requests (PXE ROM, UEFI HTTP, iPXE) with options replaced, added and dropped: every answer is well-formed', () => {
    const outcomes = { answered: 0, silent: 0 };
    fc.assert(
      fc.property(structuredRequest, fc.constantFrom(...CONFIGS), context, (req, config, ctx) => {
        outcomes[checkAnswer(req, config, ctx)]++;
        // And as it arrives on the wire.
        const d = decodeTotally(encodePacket(req));
        assert.ok(d.ok, 'a built request does not decode');
        checkAnswer(d.packet, config, ctx);
      }),
      { numRuns: RUNS, seed: 0x0d4c9003 },
    );
    expect(outcomes.answered).toBeGreaterThan(RUNS / 10);
    expect(outcomes.silent).toBeGreaterThan(RUNS / 10);
  });

  it('byte-level mutations of valid DISCOVERs and REQUESTs (built and captured): decode is total, every answer is well-formed', () => {
    const outcomes = { error: 0, answered: 0, silent: 0 };
    fc.assert(
      fc.property(mutatedRequest, fc.constantFrom(...CONFIGS), context, (buf, config, ctx) => {
        const d = decodeTotally(buf);
        if (!d.ok) {
          outcomes.error++;
          return;
        }
        outcomes[checkAnswer(d.packet, config, ctx)]++;
      }),
      { numRuns: RUNS, seed: 0x0d4c9004 },
    );
    expect(outcomes.error).toBeGreaterThan(RUNS / 20);
    expect(outcomes.answered).toBeGreaterThan(RUNS / 20);
  });
});
