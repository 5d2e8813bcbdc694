// Fast track: a discovery Mage that the server tells to reboot (its machine now has a workflow) first asks
// for the script its iPXE would get after that reboot — the same open GET /boot/:mac iPXE makes, so nothing
// is handed out that a reboot would not hand out — and when that script would boot exactly what is running
// (the same kernel command line apart from the workflow and its token, the same Mage image as the server's
// manifest describes it), Mage goes on as the imaging Mage in this boot. A server spends minutes in POST
// and firmware PXE; a VM under TCG ~20 s. Anything unexpected is a reason to reboot instead.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';

export interface ImagingScript {
  kernelUrl: string;
  /** The kernel arguments, in order, without dragonfly.workflow= and dragonfly.token=. */
  args: string[];
  workflow: string;
  token: string;
}

export type FastTrack = { workflow: string; token: string } | { reason: string };

const WORKFLOW = /^dragonfly\.workflow=(wf-[a-z0-9-]{1,80})$/;
const TOKEN = /^dragonfly\.token=([0-9a-f]{64})$/;

/** The kernel line of an imaging script as boot/ipxe.ts renders it; undefined for any other script. */
export function parseImagingScript(text: string): ImagingScript | undefined {
  if (!text.startsWith('#!ipxe')) return undefined;
  const line = text.split('\n').find((l) => l.startsWith('kernel '));
  if (!line) return undefined;
  const words = line.replace(/\s+\|\|.*$/, '').split(/\s+/).slice(1);
  const kernelUrl = words.shift();
  let workflow: string | undefined;
  let token: string | undefined;
  const args: string[] = [];
  for (const w of words) {
    const wf = WORKFLOW.exec(w);
    const tk = TOKEN.exec(w);
    if (wf) workflow = wf[1];
    else if (tk) token = tk[1];
    else args.push(w);
  }
  return kernelUrl && workflow && token ? { kernelUrl, args, workflow, token } : undefined;
}

export interface RunningBoot {
  /** dragonfly.url= of this boot. */
  server: string;
  /** /proc/cmdline of this boot. */
  cmdline: string;
  /** sha256 of the Mage bundle this process runs. */
  bundleSha256: string;
  /** uname -r. */
  kernelRelease: string;
}

export interface ServedImage {
  bundle?: { sha256?: string };
  kernel?: { release?: string };
}

/** Why `script` would not boot what is running, or undefined when it would (pure). */
export function differsFrom(script: ImagingScript, running: RunningBoot, served: ServedImage): string | undefined {
  const base = running.server.replace(/\/+$/, '');
  if (script.kernelUrl !== `${base}/mage/vmlinuz`) return `the imaging script boots ${script.kernelUrl}, not ${base}/mage/vmlinuz`;
  const now = running.cmdline.trim().split(/\s+/);
  if (script.args.join(' ') !== now.join(' ')) return 'the imaging script has other kernel arguments than this boot';
  if (served.kernel?.release !== running.kernelRelease) return `the server's Mage kernel is ${served.kernel?.release ?? 'unknown'}, this one ${running.kernelRelease}`;
  if (served.bundle?.sha256 !== running.bundleSha256) return "the server's Mage is another build than this one";
  return undefined;
}

/** Ask the server for this machine's script and its Mage manifest; the workflow to go on with, or why not. */
export async function fastTrack(running: RunningBoot, mac: string): Promise<FastTrack> {
  const base = running.server.replace(/\/+$/, '');
  const get = async (url: string) => {
    const res = await fetch(url, { signal: AbortSignal.timeout(30_000) });
    if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
    return res.text();
  };
  try {
    const script = parseImagingScript(await get(`${base}/boot/${mac}`));
    if (!script) return { reason: 'the server does not answer this machine with an imaging script' };
    const served = JSON.parse(await get(`${base}/mage/manifest.json`)) as ServedImage;
    const why = differsFrom(script, running, served);
    return why ? { reason: why } : { workflow: script.workflow, token: script.token };
  } catch (e) {
    return { reason: (e as Error).message };
  }
}

/** What this process is running: the bundle file's sha256, the kernel release, /proc/cmdline. */
export function runningBoot(server: string, bundleFile: string, cmdlineFile = '/proc/cmdline'): RunningBoot {
  return {
    server,
    cmdline: fs.readFileSync(cmdlineFile, 'utf8'),
    bundleSha256: createHash('sha256').update(fs.readFileSync(bundleFile)).digest('hex'),
    kernelRelease: os.release(),
  };
}
