// iPXE scripts, rendered by pure functions from validated values only. Every value that reaches a script
// is checked against a strict character set first: a script is code the machine executes.
import type { BootFate } from '../schemas/lifecycle.js';

export interface ScriptContext {
  /** Base URL of this server as machines reach it, e.g. http://10.0.0.1:8080 (no trailing slash). */
  serverUrl: string;
  /** Normalised boot MAC. */
  mac: string;
  /** For the comment at the top; a DNS label or a memorable name. */
  name?: string;
  /** iPXE's ${platform}: pcbios or efi (anything else is treated as pcbios). */
  platform?: string;
  /** The imaging workflow's token (hex); absent once a Mage has claimed the workflow. */
  token?: string;
  /** Extra kernel arguments for Mage (already validated by the caller's configuration). */
  kernelArgs?: string;
}

export class UnsafeScriptValue extends Error {}

// URL-ish values: no spaces, quotes, `$`, `{`, `}`, `;`, `#`, newlines, `||`-style shell of iPXE.
const SAFE = /^[A-Za-z0-9._:/?=&%@+,~-]*$/;
const SAFE_ARGS = /^[A-Za-z0-9._:/=,+@%-]*(?: [A-Za-z0-9._:/=,+@%-]+)*$/;

function safe(value: string, what: string, pattern = SAFE): string {
  if (!pattern.test(value)) throw new UnsafeScriptValue(`refusing to put ${what} ${JSON.stringify(value)} into an iPXE script`);
  return value;
}

/** The script every machine gets first (over HTTP, or from TFTP as boot.ipxe / autoexec.ipxe). */
export function entryScript(serverUrl: string): string {
  const base = safe(serverUrl, 'the server URL');
  return [
    '#!ipxe',
    '# Dragonfly: the server decides this machine\'s fate from its MAC.',
    // ${netX} is the device iPXE booted from; net0 may be another NIC on a multi-NIC server.
    `chain --autofree ${base}/boot/\${netX/mac:hexhyp}?arch=\${buildarch}&platform=\${platform}&uuid=\${uuid} || goto retry`,
    // The machine's script ended without booting anything: its `exit` (local boot) returns here, and only
    // this script's own `exit` hands the machine back to the firmware's next boot device.
    'exit',
    ':retry',
    `echo Dragonfly: ${base} did not answer; retrying in 10 seconds`,
    'sleep 10',
    `chain --autofree ${base}/boot.ipxe`,
    '',
  ].join('\n');
}

function mageScript(ctx: ScriptContext, title: string, extra: string[]): string {
  const base = safe(ctx.serverUrl, 'the server URL');
  const args = [
    `dragonfly.url=${base}`,
    `dragonfly.mac=${safe(ctx.mac, 'the MAC')}`,
    ...extra,
    ...(ctx.kernelArgs ? [safe(ctx.kernelArgs, 'the kernel arguments', SAFE_ARGS)] : []),
    'console=tty0',
    'console=ttyS0,115200',
    'initrd=initrd',
  ];
  return [
    '#!ipxe',
    `# Dragonfly: ${title} for ${safe(ctx.mac, 'the MAC')}${ctx.name ? ` (${safe(ctx.name, 'the name')})` : ''}`,
    `kernel ${base}/mage/vmlinuz ${args.join(' ')} || goto failed`,
    `initrd --name initrd ${base}/mage/initrd || goto failed`,
    'boot || goto failed',
    ':failed',
    'echo Dragonfly: could not boot Mage; retrying in 10 seconds',
    'sleep 10',
    `chain --autofree ${base}/boot.ipxe`,
    '',
  ].join('\n');
}

function localBootScript(ctx: ScriptContext, reason: string): string {
  const lines = ['#!ipxe', `# Dragonfly: local boot for ${safe(ctx.mac, 'the MAC')}${ctx.name ? ` (${safe(ctx.name, 'the name')})` : ''}: ${safe(reason, 'the reason', /^[A-Za-z0-9 .:;,@()-]*$/)}`];
  if (ctx.platform === 'efi') {
    // UEFI: hand back to the firmware's boot order; if that fails, boot the first disk directly.
    lines.push('exit || sanboot --no-describe --drive 0x80');
  } else {
    lines.push('exit');
  }
  lines.push('');
  return lines.join('\n');
}

export function bootScriptFor(fate: BootFate, ctx: ScriptContext): string {
  switch (fate.kind) {
    case 'discovery':
      return mageScript(ctx, 'discovery', []);
    case 'imaging':
      // Claimed by a Mage already (this machine's previous boot, or whoever claimed first): no token; this
      // Mage reports and waits until the workflow ends.
      if (!ctx.token) return mageScript(ctx, `imaging (${safe(fate.workflow, 'the workflow id')}, claimed; waiting for it to end)`, [`dragonfly.workflow=${safe(fate.workflow, 'the workflow id')}`]);
      return mageScript(ctx, `imaging (${safe(fate.workflow, 'the workflow id')})`, [
        `dragonfly.workflow=${safe(fate.workflow, 'the workflow id')}`,
        `dragonfly.token=${safe(ctx.token, 'the token', /^[0-9a-f]{64}$/)}`,
      ]);
    case 'localboot':
      return localBootScript(ctx, fate.reason);
  }
}
