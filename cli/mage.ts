// `dragonfly mage`: the agent (in Mage's initramfs, or anywhere for tests); `dragonfly mage run`, which
// executes a template's actions against a disk or disk image without a server; and `dragonfly mage build`,
// which builds Mage's boot environment (vmlinuz + initrd) from Debian packages.
import fs from 'node:fs';
import path from 'node:path';
import { DragonflyError } from '../schemas/errors.js';
import { normalizeMac } from '../schemas/mac.js';
import { memorableName } from '../schemas/memorable-name.js';
import type { ActionReport, Workflow } from '../schemas/types.js';
import { buildMageImage } from '../mage/build/image.js';
import { runMageAgent } from '../mage/build/entry.js';
import { runWorkflow } from '../mage/workflow-runner.js';
import { loadFleet } from '../reconciler/load.js';
import { formatDiagnostic } from '../reconciler/diagnostics.js';
import { substituteDeep } from '../reconciler/variables.js';
import { InvalidFleetError } from './fleet.js';
import type { Io } from './output.js';
import { progressBar } from './progress.js';

export const mageHelp = `Usage: dragonfly mage [--server URL] [--mac MAC] [--root DIR] [--disk PATH] [--no-reboot] [--no-p2p]
       dragonfly mage run --template FILE --disk PATH [--set machine.name=web-01 ...] [--kexec]
       dragonfly mage build --out DIR [--kernel-package NAME] [--node PATH]

The agent: report this machine's hardware, follow the server's instruction, run the workflow it was
booted for and report per-action progress; retries with backoff while the server is unreachable.
The server URL, MAC, workflow and token default to dragonfly.url=, dragonfly.mac=, dragonfly.workflow=
and dragonfly.token= on /proc/cmdline (the iPXE script puts them there).

  --server URL    the Dragonfly server
  --mac MAC       the boot MAC
  --root DIR      read /proc and /sys under DIR (fixture trees in tests)
  --disk PATH     write to PATH instead of the workflow's install disk
  --no-reboot     print the final instruction (reboot / localboot) instead of rebooting
  --no-p2p        fetch the image from its URL only; by default image2disk takes it through the server's
                  P2P swarm (falling back to the URL) and serves it to the rest of the rollout until the
                  reboot (at most a minute; docs/p2p.md)

\`mage run\` executes a template's actions against a disk or a disk image, without a server: test a
template on a VM disk image before rolling it out. \${disk} is --disk; kexec is a dry run unless --kexec.

\`mage build\` builds the boot environment that \`dragonfly serve --mage-dir DIR\` serves as /mage/vmlinuz and
/mage/initrd (\`dragonfly serve\` without --mage-dir builds one itself, into STATE/mage): DIR/vmlinuz (a
Debian kernel), DIR/initrd (busybox, node, the disk tools Mage's actions run and the libraries they load, all
from Debian packages but node; NIC and disk drivers, Mage; zstd-compressed cpio) and DIR/manifest.json
(versions, sizes, sha256s, module, tool, library and package lists). Needs apt (Debian or Ubuntu), kmod,
zstd; .debs are cached in $DRAGONFLY_DEB_CACHE (default /var/tmp/dragonfly-debs). The same inputs give the
same bytes (SOURCE_DATE_EPOCH sets the mtimes; DRAGONFLY_MAGE_ZSTD_LEVEL, default 9, the compression).

  --out DIR              where vmlinuz, initrd and manifest.json go
  --kernel-package NAME  the Debian kernel package (default: the one linux-image-amd64 depends on, the
                         standard kernel, with drivers for real NICs and disks). linux-image-cloud-amd64
                         boots faster in VMs (no XZ kernel to unpack) but has no e1000, igb, ixgbe, tg3,
                         r8169, bnxt_en or ahci drivers: use it only for virtio VMs
  --node PATH            the node binary to ship (default: the one running dragonfly; Node 20 or newer);
                         stripped when \`strip\` is installed; its libraries come from libc6, libgcc-s1
                         and libstdc++6
`;

function parseSets(sets: string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const s of sets) {
    const eq = s.indexOf('=');
    if (eq < 1) throw new DragonflyError('DF_ERR_USAGE', `--set ${s}: write KEY=VALUE, e.g. machine.name=web-01`);
    out[s.slice(0, eq)] = s.slice(eq + 1);
  }
  return out;
}

export async function mageRunCommand(opts: { template?: string; disk?: string; set: string[]; kexec?: boolean }, io: Io): Promise<number> {
  if (!opts.template || !opts.disk) throw new DragonflyError('DF_ERR_USAGE', 'mage run needs --template FILE and --disk PATH');
  if (!fs.existsSync(opts.disk)) throw new DragonflyError('DF_ERR_USAGE', `--disk ${opts.disk} does not exist (create a disk image with: truncate -s 8G ${opts.disk})`);
  const text = fs.readFileSync(opts.template, 'utf8');
  const { fleet, diagnostics } = loadFleet([{ path: path.basename(opts.template), text }]);
  for (const d of diagnostics) io.err(formatDiagnostic(d) + '\n');
  if (!fleet) throw new InvalidFleetError(diagnostics);
  const [template, ...others] = fleet.templates.values();
  if (!template || others.length > 0) throw new DragonflyError('DF_ERR_USAGE', `${opts.template} must hold exactly one Template`);
  const sets = parseSets(opts.set);
  const mac = normalizeMac(sets['machine.mac'] ?? '52:54:00:00:00:01');
  if (!mac) throw new DragonflyError('DF_ERR_BAD_MAC', `machine.mac ${sets['machine.mac']} is not a MAC address`);
  const labels = Object.fromEntries(Object.entries(sets).filter(([k]) => k.startsWith('machine.labels.')).map(([k, v]) => [k.slice('machine.labels.'.length), v]));
  const ctx = {
    machine: { name: sets['machine.name'] ?? memorableName(mac)!, memorableName: memorableName(mac)!, mac, labels },
    disk: opts.disk,
    ...(template.spec.image ? { imageUrl: template.spec.image.url } : {}),
  };
  const wf: Pick<Workflow, 'actions' | 'image' | 'disk'> = {
    disk: opts.disk,
    ...(template.spec.image ? { image: { ...template.spec.image } } : {}),
    actions: template.spec.actions.map((a) => {
      const [action, params] = Object.entries(a)[0]!;
      return { action: action as Workflow['actions'][number]['action'], params: substituteDeep(params as object, ctx) as Record<string, unknown>, state: 'pending' as const };
    }),
  };
  const bars = new Map<number, ReturnType<typeof progressBar>>();
  const outcome = await runWorkflow(wf, {
    disk: opts.disk,
    dryRunKexec: !opts.kexec,
    report: async (index: number, r: ActionReport) => {
      const bar = bars.get(index) ?? progressBar(`${wf.actions[index]!.action.padEnd(10)}`, 0);
      bars.set(index, bar);
      if (r.percent !== undefined) bar.update(Math.round(r.percent), 100);
      if (r.state !== 'running') {
        bar.stop();
        io.err(`${r.state === 'succeeded' ? '✓' : '✗'} ${r.message ?? wf.actions[index]!.action}\n`);
      }
    },
    log: (line) => io.out(line + '\n'),
  });
  if (!outcome.ok) {
    io.err(`mage run failed: ${outcome.error}\n`);
    return 1;
  }
  io.out(`All ${wf.actions.length} actions succeeded on ${opts.disk}.\n`);
  return 0;
}

export async function mageCommand(opts: { server?: string; mac?: string; root?: string; disk?: string; noReboot?: boolean; noP2p?: boolean }, io: Io): Promise<number> {
  // The same code as the initramfs runs (mage/build/entry.ts is what esbuild bundles).
  return runMageAgent({
    ...(opts.server ? { server: opts.server } : {}),
    ...(opts.mac ? { mac: opts.mac } : {}),
    ...(opts.root ? { root: opts.root } : {}),
    ...(opts.disk ? { disk: opts.disk } : {}),
    noReboot: opts.noReboot === true,
    noP2p: opts.noP2p === true,
    log: (line) => io.err(`mage: ${line}\n`),
    out: (line) => io.out(`${line}\n`),
  });
}

export async function mageBuildCommand(opts: { out?: string; kernelPackage?: string; node?: string }, io: Io): Promise<number> {
  if (!opts.out) throw new DragonflyError('DF_ERR_USAGE', 'mage build needs --out DIR', {}, 'dragonfly mage build --out /srv/dragonfly/mage, then dragonfly serve --mage-dir /srv/dragonfly/mage');
  // A failed step throws DF_ERR_MAGE_BUILD with its own hint; run.ts reports it (exit 1).
  const m = await buildMageImage({
    out: opts.out,
    ...(opts.kernelPackage ? { kernelPackage: opts.kernelPackage } : {}),
    ...(opts.node ? { node: opts.node } : {}),
    log: (line) => io.err(`mage build: ${line}\n`),
  });
  const dir = path.resolve(opts.out);
  io.out(
    `${path.join(dir, 'vmlinuz')}  ${m.kernel.package} ${m.kernel.version}, ${m.vmlinuz.bytes} bytes, sha256 ${m.vmlinuz.sha256}\n` +
      `${path.join(dir, 'initrd')}  node ${m.node.version}, ${m.modules.allFiles.length} kernel modules, ${m.tools.length} tools, ${m.initrd.bytes} bytes, sha256 ${m.initrd.sha256}\n` +
      `${path.join(dir, 'manifest.json')}\n` +
      `Serve it with: dragonfly serve --mage-dir ${dir}\n`,
  );
  return 0;
}
