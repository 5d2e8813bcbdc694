// Who gets a PXE answer and what it says: a pure function of the request, the configuration and the
// little the server remembers about the MAC. No I/O; the server (server.ts) decides where the reply goes.
//
// Chain: firmware PXE ROM --DHCP--> iPXE binary over TFTP (undionly.kpxe, ipxe.efi) --DHCP again, now with
// user class "iPXE"--> the HTTP script URL. The user class breaks the chainload loop: iPXE never gets the
// binary it already is, so it never loads itself forever.
import {
  BOOTREPLY,
  BOOTREQUEST,
  CLIENT_ARCH,
  encodeSubOptions,
  IPXE_SUBOPTION,
  ipToBytes,
  MESSAGE_TYPE,
  OPTION,
  PXE_SUBOPTION,
  readClientInfo,
  type ClientInfo,
  type DhcpPacket,
} from './packet.js';

export interface BootfileConfig {
  /** x86 BIOS (arch 0), over TFTP: Debian's `undionly.kpxe`. */
  bios: string;
  /** x86-64 UEFI (arch 7 and 9) over TFTP, and (arch 16) over HTTP: `ipxe.efi`, or `snponly.efi` to use the firmware's NIC driver. */
  efi64: string;
  /** x86 32-bit UEFI (arch 6, and 15 over HTTP). */
  efi32?: string;
  /** ARM64 UEFI (arch 11, and 19 over HTTP). */
  arm64?: string;
  /** Any RFC 4578 architecture type → file name (TFTP) or absolute http(s) URL. Wins over the fields above. */
  byArch?: Record<number, string>;
}

export interface PolicyConfig {
  /** This server's address on the boot network: option 54 (server identifier). */
  serverIp: string;
  /** The boot server's HTTP base as machines reach it, e.g. http://10.0.0.1:8080 (no trailing slash needed). */
  httpUrl: string;
  /** TFTP server (siaddr, option 66) when it is not `serverIp`. */
  tftpServer?: string;
  bootfiles: BootfileConfig;
  /** Path of the iPXE script on `httpUrl` (default /boot.ipxe). */
  scriptPath?: string;
  /** Path under `httpUrl` where the iPXE binaries are served to UEFI HTTP boot clients (default /ipxe/). */
  ipxeHttpPath?: string;
  /**
   * Also chainload clients whose ROM already is iPXE (QEMU, Proxmox VMs) into our binary, once per MAC:
   * their first DHCP transaction gets the binary, the next one (the binary's own, with a new xid) the script.
   * Needs the server's per-MAC memory: the ROM and the binary are the same iPXE and send identical options.
   * Off by default: an iPXE ROM can run the script directly.
   */
  chainloadIpxeRoms?: boolean;
}

export interface RequestContext {
  /** Where the request arrived: the DHCP port (67) or the PXE boot-server port (4011). */
  port: 'dhcp' | 'pxe';
  /** 'proxy' answers next to another DHCP server and leases nothing; 'full' (test-only) leases too. */
  mode: 'proxy' | 'full';
  /** The server handed this MAC the iPXE binary moments ago, in another DHCP transaction (only used with chainloadIpxeRoms). */
  chainedRecently?: boolean;
}

/** Firmware PXE ROM, UEFI HTTP boot client, or iPXE (user class "iPXE"). */
export type ClientKind = 'pxe' | 'http' | 'ipxe';

export type Decision =
  | { answer: false; reason: string }
  | {
      answer: true;
      info: ClientInfo;
      client: ClientKind;
      arch: number;
      /** A TFTP file name or an http(s) URL. */
      bootfile: string;
      /** 'binary': an iPXE build to load; 'script': the HTTP iPXE script. */
      stage: 'binary' | 'script';
      replyType: typeof MESSAGE_TYPE.OFFER | typeof MESSAGE_TYPE.ACK;
    };

export interface PxeAnswer {
  /** The reply to encode; in full mode the lease (yiaddr, 51, 1, 3) is added by the server. */
  packet: DhcpPacket;
  client: ClientKind;
  arch: number;
  bootfile: string;
  stage: 'binary' | 'script';
}

const PROXY_CONTEXT: RequestContext = { port: 'dhcp', mode: 'proxy' };

/** The answer for a request, or undefined when Dragonfly must stay silent. */
export function answerFor(request: DhcpPacket, config: PolicyConfig, context: RequestContext = PROXY_CONTEXT): PxeAnswer | undefined {
  const d = decide(request, config, context);
  return d.answer ? replyFor(request, d, config, context) : undefined;
}

/** The decision with its reason: answerFor's first half, exported so the server can log why it stayed silent. */
export function decide(request: DhcpPacket, config: PolicyConfig, context: RequestContext = PROXY_CONTEXT): Decision {
  if (request.op !== BOOTREQUEST) return silent('not a BOOTREQUEST');
  const read = readClientInfo(request);
  if (!read.ok) return silent(`malformed: ${read.error.message}`);
  const info = read.info;

  let replyType: typeof MESSAGE_TYPE.OFFER | typeof MESSAGE_TYPE.ACK;
  if (info.messageType === MESSAGE_TYPE.DISCOVER) replyType = MESSAGE_TYPE.OFFER;
  else if (info.messageType === MESSAGE_TYPE.REQUEST) replyType = MESSAGE_TYPE.ACK;
  else return silent(info.messageType === undefined ? 'BOOTP without a DHCP message type' : `message type ${info.messageType} is not answered`);

  // A REQUEST on port 67 names the server it chose (option 54). In proxy mode the lease is the other
  // server's business; we answer only a REQUEST addressed to us. On 4011 the REQUEST is ours by definition.
  if (replyType === MESSAGE_TYPE.ACK && context.port === 'dhcp') {
    if (context.mode === 'proxy' && info.serverId !== config.serverIp) return silent('REQUEST for another DHCP server');
    if (context.mode === 'full' && info.serverId !== undefined && info.serverId !== config.serverIp) return silent('REQUEST for another DHCP server');
  }

  // PXE 2.1 §2.2 and UEFI 2.x §24.7: only clients announcing themselves in option 60 are ours.
  const vc = info.vendorClass ?? '';
  const isHttp = vc.startsWith('HTTPClient');
  if (!isHttp && !vc.startsWith('PXEClient')) return silent(info.vendorClass === undefined ? 'not a PXE client (no option 60)' : `not a PXE client (option 60 ${JSON.stringify(vc.slice(0, 40))})`);

  // RFC 4578 §2.1; ROMs without option 93 still write the arch into option 60 ("PXEClient:Arch:00000:...").
  const fromVc = /:Arch:(\d{5})/.exec(vc);
  const arch = info.archs[0] ?? (fromVc ? Number(fromVc[1]) : CLIENT_ARCH.X86_BIOS);

  const isIpxe = info.userClasses.includes('iPXE');
  if (isIpxe && (!config.chainloadIpxeRoms || context.chainedRecently)) {
    return { answer: true, info, client: 'ipxe', arch, bootfile: joinUrl(config.httpUrl, config.scriptPath ?? '/boot.ipxe'), stage: 'script', replyType };
  }

  const file = bootfileFor(arch, config.bootfiles);
  // An iPXE ROM we have no binary for can still run the script itself.
  if (!file && isIpxe) return { answer: true, info, client: 'ipxe', arch, bootfile: joinUrl(config.httpUrl, config.scriptPath ?? '/boot.ipxe'), stage: 'script', replyType };
  if (!file) return silent(`no bootfile configured for client architecture ${arch}`);
  const client: ClientKind = isIpxe ? 'ipxe' : isHttp ? 'http' : 'pxe';
  // UEFI HTTP boot fetches a URL; a plain file name becomes one under ipxeHttpPath.
  const bootfile = isHttp && !isUrl(file) ? joinUrl(config.httpUrl, (config.ipxeHttpPath ?? '/ipxe/') + file) : file;
  if (!isHttp && isUrl(bootfile) && !isIpxe) return silent(`bootfile ${bootfile} is a URL, which a PXE ROM (arch ${arch}) cannot fetch`);
  return { answer: true, info, client, arch, bootfile, stage: 'binary', replyType };
}

/** RFC 4578 §2.1 types to files; HTTP boot types (15, 16, 18, 19) use the file of their TFTP twin. */
export function bootfileFor(arch: number, files: BootfileConfig): string | undefined {
  const override = files.byArch?.[arch];
  if (override) return override;
  switch (arch) {
    case CLIENT_ARCH.X86_BIOS:
      return files.bios;
    case CLIENT_ARCH.EFI_BC:
    case CLIENT_ARCH.EFI_X86_64:
    case CLIENT_ARCH.EFI_X86_64_HTTP:
      return files.efi64;
    case CLIENT_ARCH.EFI_IA32:
    case CLIENT_ARCH.EFI_X86_HTTP:
      return files.efi32;
    case CLIENT_ARCH.EFI_ARM64:
    case CLIENT_ARCH.EFI_ARM64_HTTP:
      return files.arm64;
    default:
      return undefined;
  }
}

/** answerFor's second half: the reply a positive decision makes. */
export function replyFor(req: DhcpPacket, d: Extract<Decision, { answer: true }>, config: PolicyConfig, context: RequestContext): PxeAnswer {
  return { packet: buildReply(req, d, config, context), client: d.client, arch: d.arch, bootfile: d.bootfile, stage: d.stage };
}

function buildReply(req: DhcpPacket, d: Extract<Decision, { answer: true }>, config: PolicyConfig, context: RequestContext): DhcpPacket {
  const tftp = config.tftpServer ?? config.serverIp;
  const options = new Map<number, Buffer>();
  options.set(OPTION.MESSAGE_TYPE, Buffer.from([d.replyType]));
  options.set(OPTION.SERVER_ID, ipToBytes(config.serverIp));

  // Option 60 marks the reply: "HTTPClient" is required by UEFI HTTP boot (UEFI 2.x §24.7.2). In proxy mode
  // "PXEClient" is what makes ROMs (and iPXE) read an address-less offer as a ProxyDHCP offer. In full mode
  // iPXE gets none: with it, iPXE would also take our offer as ProxyDHCP and send a needless 4011 REQUEST.
  const vendorClass = d.client === 'http' ? 'HTTPClient' : context.mode === 'proxy' || d.client === 'pxe' ? 'PXEClient' : undefined;
  if (vendorClass) options.set(OPTION.VENDOR_CLASS, Buffer.from(vendorClass, 'latin1'));
  // PXE 2.1 §2.4.4: discovery control bit 3: boot the file in this offer; no boot-server discovery, no menu wait.
  if (vendorClass === 'PXEClient') {
    options.set(OPTION.VENDOR_OPTIONS, encodeSubOptions(new Map([[PXE_SUBOPTION.DISCOVERY_CONTROL, Buffer.from([0x08])]]), true));
  }
  // PXE 2.1 §2.2: a client that sent its UUID/GUID expects it back (some ROMs drop the offer otherwise).
  // Echoed only in the one shape RFC 4578 §2.3 defines, type 0 + 16-byte GUID (17 bytes): the reply is
  // broadcast to every firmware on the segment, and echoing any value (kilobytes via RFC 3396) would let
  // one host feed them oversized options and push the reply past the 576 bytes a client must accept
  // (RFC 2131 §2). A misshapen one is not trimmed: a trimmed copy is another identifier, not an echo.
  if (d.info.uuid !== undefined && d.info.uuidRaw) options.set(OPTION.CLIENT_UUID, d.info.uuidRaw);
  const viaTftp = !isUrl(d.bootfile);
  if (viaTftp) options.set(OPTION.TFTP_SERVER, Buffer.from(tftp, 'latin1'));
  options.set(OPTION.BOOTFILE, Buffer.from(d.bootfile, 'latin1'));
  // iPXE 175.176 (no-pxedhcp): do not wait for ProxyDHCP offers after this one (iPXE otherwise waits seconds).
  if (d.client === 'ipxe') options.set(OPTION.IPXE_ENCAP, encodeSubOptions(new Map([[IPXE_SUBOPTION.NO_PXEDHCP, Buffer.from([1])]]), false));

  return {
    ...replyHeader(req),
    // RFC 2131 table 3: ciaddr is echoed in an ACK, zero in an OFFER.
    ciaddr: d.replyType === MESSAGE_TYPE.ACK ? req.ciaddr : '0.0.0.0',
    yiaddr: '0.0.0.0',
    siaddr: tftp,
    // PXE ROMs read the `file` field; it holds 127 bytes and a NUL, option 67 carries longer names alone.
    file: Buffer.byteLength(d.bootfile, 'latin1') <= 127 ? d.bootfile : '',
    options,
  };
}

/** RFC 2131 table 3: the BOOTREPLY fields every reply copies from its request (or sets to zero). */
export function replyHeader(req: DhcpPacket): Pick<DhcpPacket, 'op' | 'htype' | 'hlen' | 'hops' | 'xid' | 'secs' | 'flags' | 'giaddr' | 'chaddr' | 'sname'> {
  return { op: BOOTREPLY, htype: req.htype, hlen: req.hlen, hops: 0, xid: req.xid, secs: 0, flags: req.flags, giaddr: req.giaddr, chaddr: req.chaddr, sname: '' };
}

/** Check a configuration once, at startup: every problem a user can cause, in one message each. */
export function configProblems(config: PolicyConfig): string[] {
  const problems: string[] = [];
  for (const [name, ip] of [
    ['serverIp', config.serverIp],
    ['tftpServer', config.tftpServer],
  ] as const) {
    if (ip === undefined && name === 'tftpServer') continue;
    try {
      ipToBytes(ip ?? '');
    } catch {
      problems.push(`${name} ${JSON.stringify(ip)} is not an IPv4 address`);
    }
  }
  if (!isUrl(config.httpUrl)) problems.push(`httpUrl ${JSON.stringify(config.httpUrl)} is not an http(s) URL such as http://10.0.0.1:8080`);
  if (!config.bootfiles?.bios || !config.bootfiles?.efi64) problems.push('bootfiles.bios and bootfiles.efi64 are required (e.g. undionly.kpxe and ipxe.efi)');
  const files = Object.entries(config.bootfiles ?? {}).flatMap(([k, v]) => (k === 'byArch' ? Object.values(v as Record<string, string>) : [v]));
  for (const f of files) {
    if (typeof f !== 'string' || f.length === 0 || Buffer.byteLength(f, 'latin1') > 255 || /[\0\s]/.test(f)) {
      problems.push(`bootfile ${JSON.stringify(f)} must be a non-empty name or URL of at most 255 bytes without spaces`);
    }
  }
  return problems;
}

function joinUrl(base: string, path: string): string {
  return base.replace(/\/+$/, '') + '/' + path.replace(/^\/+/, '');
}

function isUrl(s: string): boolean {
  return /^https?:\/\/[^\s/]+/i.test(s);
}

const silent = (reason: string): Decision => ({ answer: false, reason });
