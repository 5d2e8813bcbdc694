// The Mage agent: register the hardware, follow the server's instruction, run the workflow it was
// booted for, report progress, and keep going through network failures and server restarts.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import type { ActionReport, HardwareReport, RegisterResponse, Workflow, WorkflowP2P } from '../schemas/types.js';
import type { FastTrack } from './fast-track.js';
import { runWorkflow, type RunOutcome } from './workflow-runner.js';

export interface AgentOptions {
  server: string;
  mac: string;
  workflow?: string;
  token?: string;
  /** Collects the hardware report (inventory under a root in tests). */
  inventory: () => Promise<HardwareReport>;
  /** Overrides the workflow's install disk (a disk image in tests). */
  disk?: string;
  dryRunKexec?: boolean;
  /** What to do on `reboot` / `localboot`; the default stops the agent and returns the instruction. */
  log?: (line: string) => void;
  /** Give up after this many consecutive failed attempts at one call (default: never). */
  maxAttempts?: number;
  /** Poll interval while waiting, instead of the server's pollSeconds and its long poll (tests, impatient operators). */
  pollMs?: number;
  /** How long the server may hold a registration that would answer wait (default 25 s: under common proxy idle timeouts). */
  waitSeconds?: number;
  /**
   * A discovery Mage told to reboot asks this first (mage/fast-track.ts): a workflow and token to go on with
   * in this boot, or why not (then it reboots). At most once per boot.
   */
  fastTrack?: () => Promise<FastTrack>;
  /** Stop waiting: the agent returns 'stopped' at once, even from a held registration. */
  signal?: AbortSignal;
  /** Fetch images from their URL only, even when the server offers its P2P swarm (`--no-p2p`). */
  noP2p?: boolean;
}

export class AgentError extends Error {
  constructor(message: string, readonly status?: number, readonly code?: string) {
    super(message);
  }
}
class Stopped extends Error {}

/** Every call gives up after this long (then retries): a server that vanished without a FIN must not hang Mage. */
const CALL_TIMEOUT_MS = 60_000;

/** dragonfly.url / .mac / .workflow / .token from a kernel command line. */
export function parseCmdline(cmdline: string): Partial<Record<'url' | 'mac' | 'workflow' | 'token', string>> {
  const out: Partial<Record<'url' | 'mac' | 'workflow' | 'token', string>> = {};
  for (const word of cmdline.trim().split(/\s+/)) {
    const m = /^dragonfly\.(url|mac|workflow|token)=(\S+)$/.exec(word);
    if (m) out[m[1] as 'url'] = m[2];
  }
  return out;
}

export function readCmdline(file = '/proc/cmdline'): ReturnType<typeof parseCmdline> {
  try {
    return parseCmdline(fs.readFileSync(file, 'utf8'));
  } catch {
    return {};
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** One HTTP call, retried with exponential backoff (capped at 30 s) while the server is unreachable or failing. */
async function call<T>(opts: AgentOptions, method: 'GET' | 'POST', path: string, body?: unknown, token?: string, wait?: { timeoutMs: number; stoppable: true }): Promise<T> {
  const timeoutMs = wait?.timeoutMs ?? CALL_TIMEOUT_MS;
  // Only a registration may be cut short by opts.signal: a workflow's reports always go out.
  const stop = wait?.stoppable ? opts.signal : undefined;
  for (let attempt = 0; ; attempt++) {
    try {
      const timeout = AbortSignal.timeout(timeoutMs);
      const res = await fetch(opts.server.replace(/\/+$/, '') + path, {
        method,
        signal: stop ? AbortSignal.any([timeout, stop]) : timeout,
        headers: { ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...(token ? { authorization: `Bearer ${token}` } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      });
      const text = await res.text();
      if (res.status >= 500 || res.status === 429) throw new Error(`HTTP ${res.status}`);
      if (!res.ok) {
        let code: string | undefined;
        try {
          code = (JSON.parse(text) as { error?: { code?: string } }).error?.code;
        } catch {
          // not our error format
        }
        throw new AgentError(`${method} ${path}: HTTP ${res.status}: ${text.slice(0, 500)}`, res.status, code);
      }
      return JSON.parse(text) as T;
    } catch (e) {
      if (e instanceof AgentError) throw e;
      if (stop?.aborted) throw new Stopped();
      if (opts.maxAttempts !== undefined && attempt + 1 >= opts.maxAttempts) throw new AgentError(`${method} ${path}: ${(e as Error).message}`);
      const wait = Math.min(1000 * 2 ** attempt, 30_000);
      opts.log?.(`${opts.server} unreachable (${(e as Error).message}); retrying in ${wait / 1000} s`);
      await sleep(wait);
    }
  }
}

/** Run until the server says reboot or localboot; returns that instruction (the caller reboots). */
export async function runAgent(opts: AgentOptions): Promise<{ instruction: 'reboot' | 'localboot' | 'stopped'; outcome?: RunOutcome }> {
  let outcome: RunOutcome | undefined;
  let ran = false;
  // The workflow this boot is for: from the kernel command line, or taken over by the fast track.
  let workflow = opts.workflow;
  let token = opts.token;
  let fastTracked = false;
  // This Mage's own secret: the claim binds the workflow to it, and every later call presents it instead of
  // the token (which anyone who names the MAC could have read from the boot script before the claim).
  const secret = randomBytes(32).toString('hex');
  let claimed: string | undefined;
  // Long poll unless the caller polls at its own pace: the server answers a waiting machine as soon as git decides its fate.
  const waitSeconds = opts.pollMs === undefined ? (opts.waitSeconds ?? 25) : 0;
  // The first registration of a boot is answered at once, so the console shows the name and instruction
  // right away; the ones after a wait are held.
  let waited = false;
  for (;;) {
    const hardware = await opts.inventory();
    const hold = waited && waitSeconds > 0;
    const request = { mac: opts.mac, hardware, ...(workflow && !ran ? { workflow } : {}), ...(hold ? { waitSeconds } : {}) };
    // After the claim, the secret: it makes this report the machine's verified hardware.
    const credential = claimed ? secret : ran ? undefined : token;
    let reg: RegisterResponse;
    try {
      reg = await call<RegisterResponse>(opts, 'POST', '/api/v1/agent/register', request, credential, { timeoutMs: (hold ? waitSeconds * 1000 : 0) + CALL_TIMEOUT_MS, stoppable: true });
    } catch (e) {
      if (e instanceof Stopped) {
        if (outcome?.ok) outcome.linger?.stop();
        return { instruction: 'stopped', ...(outcome ? { outcome } : {}) };
      }
      throw e;
    }
    opts.log?.(`registered as ${reg.name} (${reg.memorableName}): ${reg.instruction}${reg.workflow ? ` ${reg.workflow}` : ''}`);
    if (reg.instruction === 'reboot' && opts.fastTrack && !workflow && !fastTracked) {
      fastTracked = true;
      const next = await opts.fastTrack().catch((e: Error) => ({ reason: e.message }));
      if ('workflow' in next) {
        opts.log?.(`fast track: ${next.workflow} in this boot, no reboot (the imaging script boots this very Mage)`);
        workflow = next.workflow;
        token = next.token;
        waited = false;
        continue;
      }
      opts.log?.(`no fast track (${next.reason}): rebooting`);
    }
    if (reg.instruction === 'reboot' || reg.instruction === 'localboot') {
      if (outcome?.ok && outcome.linger) {
        // The image written, the workflow reported: serve the rest of the rollout until it stops asking
        // (a few idle seconds, a minute at most), then reboot.
        opts.log?.('serving the image to the rest of the rollout before the reboot');
        const stop = () => outcome?.ok && outcome.linger?.stop();
        opts.signal?.addEventListener('abort', stop, { once: true });
        await outcome.linger.done;
        opts.signal?.removeEventListener('abort', stop);
      }
      return { instruction: reg.instruction, ...(outcome ? { outcome } : {}) };
    }
    if (reg.instruction === 'wait') {
      if (opts.signal?.aborted) return { instruction: 'stopped', ...(outcome ? { outcome } : {}) };
      // With long polls the next registration is held, so no sleep beyond a 1 s guard against a server that
      // answers at once; without them, the caller's interval or the server's.
      waited = true;
      await sleep(opts.pollMs ?? (waitSeconds ? 1 : reg.pollSeconds) * 1000);
      continue;
    }
    // run: the workflow this Mage was booted for. Claim it (once), or read it again as its claimant.
    const id = reg.workflow!;
    let wf: Workflow & { p2p?: WorkflowP2P };
    try {
      wf = claimed === id ? await call<typeof wf>(opts, 'GET', `/api/v1/agent/workflows/${id}`, undefined, secret) : await call<typeof wf>(opts, 'POST', `/api/v1/agent/workflows/${id}/claim`, { secret }, token);
    } catch (e) {
      if (!(e instanceof AgentError) || e.code !== 'DF_ERR_WORKFLOW_CLAIMED') throw e;
      // Someone else claimed it first. Nothing of this Mage's writes to the disk; the operator sees the claim.
      opts.log?.(`workflow ${id} was claimed by another Mage before this one: not running it; waiting (see the workflow.claimed event)`);
      workflow = undefined;
      token = undefined;
      waited = true;
      await sleep(opts.pollMs ?? 1000);
      continue;
    }
    claimed = id;
    outcome = await runWorkflow(wf, {
      disk: opts.disk ?? wf.disk ?? '',
      dryRunKexec: opts.dryRunKexec ?? false,
      report: (index: number, report: ActionReport) => call(opts, 'POST', `/api/v1/agent/workflows/${id}/actions/${index}`, report, secret).then(() => undefined),
      log: (line) => opts.log?.(line),
      // The image through the server's swarm (with the URL as fallback) when the server handed a token.
      ...(wf.p2p && !opts.noP2p ? { p2p: { server: opts.server, token: wf.p2p.token } } : {}),
    });
    // What the workflow left on the disks, from the claimant: the one report that replaces the stored hardware.
    const after = await opts.inventory().catch((e: Error) => (opts.log?.(`hardware report after the workflow failed: ${e.message}`), undefined));
    const finish = outcome.ok ? { state: 'succeeded' as const } : { state: 'failed' as const, error: outcome.error, ...(outcome.code ? { code: outcome.code } : {}) };
    await call(opts, 'POST', `/api/v1/agent/workflows/${id}/finish`, { ...finish, ...(after ? { hardware: after } : {}) }, secret);
    opts.log?.(outcome.ok ? `workflow ${id} succeeded` : `workflow ${id} failed: ${outcome.error}`);
    ran = true;
  }
}
