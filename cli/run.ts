// `dragonfly`: the composition root. Parses arguments, wires real parts together, maps errors to exit codes.
import { parseArgs } from 'node:util';
import { DragonflyError } from '../schemas/errors.js';
import { reportError, type Io } from './output.js';

const mainHelp = `Usage: dragonfly COMMAND [options]

Declarative, GitOps bare-metal provisioning: the fleet is YAML in git; the observed state is a local
LMDB store (--state DIR, default $DRAGONFLY_STATE or ./.dragonfly).

Commands:
  serve      serve PXE-booting machines (HTTP iPXE scripts, TFTP, proxyDHCP, the Mage agent API) and, with
             --fleet DIR or --repo URL, reconcile every new fleet revision (the GitOps controller)
  status     what the controller applied, the newest revision and its errors, drift, workflows
  suspend    stop the controller from applying (it still validates and plans); resume restarts it
  watch      follow a running server's machine and workflow events
  mage       the in-RAM agent; \`mage run\` runs a template against a disk image locally
  validate   check a fleet directory: schemas, references, template variables (file:line:col errors)
  plan       show what apply would change (+ add, ~ change, ! reimage, - retire), or a branch's (--base/--head)
  diff       the Machines, Templates and Assignments that differ between two git revisions
  apply      apply a saved plan, or plan and ask for "yes"
  machines   list machines in the store; \`machines NAME\` shows one in full
  history    list every apply (audit log)
  name       print the memorable name of a MAC
  schemas    print the JSON Schemas, or Kubernetes CRDs with --crd
  p2p        P2P image distribution: preheat an image, the swarms' status, an image's peer token
  peer       \`peer get\`: fetch an image over P2P from the machines fetching it too, serving what it holds

Run \`dragonfly COMMAND --help\` for a command's options.
`;

// Each command's module is imported when that command runs: `plan` need not load fastify, lmdb's server
// side or isomorphic-git, and a cold start is most of a small command's time.
const HELP: Record<string, () => Promise<string>> = {
  validate: async () => (await import('./validate.js')).validateHelp,
  plan: async () => (await import('./plan.js')).planHelp,
  diff: async () => (await import('./diff.js')).diffHelp,
  apply: async () => (await import('./apply.js')).applyHelp,
  machines: async () => (await import('./machines.js')).machinesHelp,
  history: async () => (await import('./history.js')).historyHelp,
  name: async () => (await import('./name.js')).nameHelp,
  schemas: async () => (await import('./schemas.js')).schemasHelp,
  serve: async () => (await import('./serve.js')).serveHelp,
  status: async () => (await import('./status.js')).statusHelp,
  suspend: async () => (await import('./status.js')).suspendHelp,
  resume: async () => (await import('./status.js')).suspendHelp,
  watch: async () => (await import('./watch.js')).watchHelp,
  mage: async () => (await import('./mage.js')).mageHelp,
  p2p: async () => (await import('./p2p.js')).p2pHelp,
  peer: async () => (await import('./peer.js')).peerHelp,
};

const OPTIONS = {
  fleet: { type: 'string' },
  state: { type: 'string' },
  out: { type: 'string' },
  json: { type: 'boolean' },
  markdown: { type: 'boolean' },
  'detailed-exitcode': { type: 'boolean' },
  base: { type: 'string' },
  head: { type: 'string' },
  'auto-approve': { type: 'boolean' },
  'no-color': { type: 'boolean' },
  crd: { type: 'boolean' },
  limit: { type: 'string' },
  http: { type: 'string' },
  tftp: { type: 'string' },
  dhcp: { type: 'string' },
  'dhcp-ip': { type: 'string' },
  'chainload-ipxe': { type: 'boolean' },
  'public-url': { type: 'string' },
  'ipxe-dir': { type: 'string' },
  'mage-dir': { type: 'string' },
  'no-mage-build': { type: 'boolean' },
  'api-token-file': { type: 'string' },
  'read-token-file': { type: 'string' },
  'token-file': { type: 'string' },
  'max-streams': { type: 'string' },
  'max-streams-per-address': { type: 'string' },
  'max-connections': { type: 'string' },
  'max-connections-per-address': { type: 'string' },
  'max-discovered': { type: 'string' },
  'max-events': { type: 'string' },
  'p2p-cache-size': { type: 'string' },
  'p2p-upload-limit': { type: 'string' },
  'log-format': { type: 'string' },
  repo: { type: 'string' },
  branch: { type: 'string' },
  path: { type: 'string' },
  poll: { type: 'string' },
  'git-credentials-file': { type: 'string' },
  manual: { type: 'boolean' },
  'webhook-secret-file': { type: 'string' },
  reason: { type: 'string' },
  server: { type: 'string' },
  since: { type: 'string' },
  mac: { type: 'string' },
  root: { type: 'string' },
  disk: { type: 'string' },
  template: { type: 'string' },
  set: { type: 'string', multiple: true },
  kexec: { type: 'boolean' },
  'no-reboot': { type: 'boolean' },
  'no-p2p': { type: 'boolean' },
  'kernel-package': { type: 'string' },
  node: { type: 'string' },
  sha256: { type: 'string' },
  listen: { type: 'string' },
  'upload-limit': { type: 'string' },
  'download-limit': { type: 'string' },
  linger: { type: 'string' },
  'piece-timeout': { type: 'string' },
  'origin-fallback': { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

// Which options each command accepts; anything else is a usage error, not silently ignored.
const ACCEPTS: Record<string, (keyof typeof OPTIONS)[]> = {
  validate: ['fleet', 'json'],
  plan: ['fleet', 'state', 'out', 'json', 'markdown', 'detailed-exitcode', 'repo', 'path', 'base', 'head', 'git-credentials-file'],
  diff: ['fleet', 'repo', 'path', 'state', 'json', 'git-credentials-file'],
  apply: ['fleet', 'state', 'auto-approve'],
  machines: ['state', 'json'],
  history: ['state', 'json', 'limit'],
  name: [],
  schemas: ['crd'],
  serve: ['fleet', 'repo', 'branch', 'path', 'poll', 'git-credentials-file', 'manual', 'webhook-secret-file', 'state', 'http', 'tftp', 'dhcp', 'dhcp-ip', 'chainload-ipxe', 'public-url', 'ipxe-dir', 'mage-dir', 'no-mage-build', 'api-token-file', 'read-token-file', 'max-streams', 'max-streams-per-address', 'max-connections', 'max-connections-per-address', 'max-discovered', 'max-events', 'p2p-cache-size', 'p2p-upload-limit', 'log-format'],
  status: ['state', 'json'],
  suspend: ['state', 'reason'],
  resume: ['state'],
  watch: ['server', 'since', 'json', 'token-file'],
  mage: ['server', 'mac', 'root', 'disk', 'no-reboot', 'no-p2p', 'template', 'set', 'kexec', 'out', 'kernel-package', 'node'],
  p2p: ['template', 'fleet', 'server', 'token-file', 'sha256', 'state', 'json'],
  peer: ['sha256', 'server', 'out', 'listen', 'upload-limit', 'download-limit', 'token-file', 'linger', 'piece-timeout', 'origin-fallback', 'json'],
};

export async function run(argv: string[], io: Io): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    io.out(mainHelp);
    return command ? 0 : 1;
  }
  if (command === '--version') {
    io.out('dragonfly 0.1.0\n');
    return 0;
  }
  const help = HELP[command];
  if (!help) return reportError(io, new DragonflyError('DF_ERR_USAGE', `unknown command "${command}"`, {}, `commands: ${Object.keys(HELP).join(', ')}`));
  let parsed;
  try {
    parsed = parseArgs({ args: rest, options: OPTIONS, allowPositionals: true, strict: true });
  } catch (e) {
    return reportError(io, new DragonflyError('DF_ERR_USAGE', (e as Error).message, {}, `run \`dragonfly ${command} --help\``));
  }
  const { values: v, positionals } = parsed;
  if (v.help) {
    io.out(await help());
    return 0;
  }
  const unexpected = Object.keys(v).filter((k) => k !== 'no-color' && !ACCEPTS[command]!.includes(k as keyof typeof OPTIONS));
  if (unexpected.length > 0) {
    return reportError(io, new DragonflyError('DF_ERR_USAGE', `${command} does not take --${unexpected.join(', --')}`, {}, `run \`dragonfly ${command} --help\``));
  }
  const maxPositionals = command === 'diff' || command === 'peer' ? 2 : command === 'apply' || command === 'name' || command === 'schemas' || command === 'mage' || command === 'machines' || command === 'p2p' ? 1 : 0;
  if (positionals.length > maxPositionals) {
    return reportError(io, new DragonflyError('DF_ERR_USAGE', `unexpected argument "${positionals[maxPositionals]}"`, {}, `run \`dragonfly ${command} --help\``));
  }
  const json = v.json === true;
  try {
    switch (command) {
      case 'validate':
        return await (await import('./validate.js')).validateCommand({ fleet: v.fleet, json }, io);
      case 'plan':
        return await (await import('./plan.js')).planCommand(
          {
            fleet: v.fleet,
            state: v.state,
            out: v.out,
            json,
            markdown: v.markdown,
            detailedExitcode: v['detailed-exitcode'],
            repo: v.repo,
            path: v.path,
            base: v.base,
            head: v.head,
            credentialsFile: v['git-credentials-file'],
          },
          io,
        );
      case 'diff':
        return await (await import('./diff.js')).diffCommand({ refs: positionals, fleet: v.fleet, repo: v.repo, path: v.path, state: v.state, json, credentialsFile: v['git-credentials-file'] }, io);
      case 'apply':
        return await (await import('./apply.js')).applyCommand({ planFile: positionals[0], fleet: v.fleet, state: v.state, autoApprove: v['auto-approve'] }, io);
      case 'machines':
        if (positionals[0] !== undefined) return await (await import('./machine-detail.js')).machineDetailCommand({ state: v.state, json, query: positionals[0] }, io);
        return await (await import('./machines.js')).machinesCommand({ state: v.state, json }, io);
      case 'history':
        return await (await import('./history.js')).historyCommand({ state: v.state, json, limit: v.limit }, io);
      case 'name':
        return await (await import('./name.js')).nameCommand(positionals[0], io);
      case 'schemas':
        return await (await import('./schemas.js')).schemasCommand({ crd: v.crd, name: positionals[0] }, io);
      case 'serve':
        return await (await import('./serve.js')).serveCommand(
          {
            fleet: v.fleet,
            repo: v.repo,
            branch: v.branch,
            path: v.path,
            poll: v.poll,
            gitCredentialsFile: v['git-credentials-file'],
            manual: v.manual,
            webhookSecretFile: v['webhook-secret-file'],
            state: v.state,
            http: v.http,
            tftp: v.tftp,
            dhcp: v.dhcp,
            dhcpIp: v['dhcp-ip'],
            chainloadIpxe: v['chainload-ipxe'],
            publicUrl: v['public-url'],
            ipxeDir: v['ipxe-dir'],
            mageDir: v['mage-dir'],
            noMageBuild: v['no-mage-build'],
            apiTokenFile: v['api-token-file'],
            readTokenFile: v['read-token-file'],
            maxStreams: v['max-streams'],
            maxStreamsPerAddress: v['max-streams-per-address'],
            maxConnections: v['max-connections'],
            maxConnectionsPerAddress: v['max-connections-per-address'],
            maxDiscovered: v['max-discovered'],
            maxEvents: v['max-events'],
            p2pCacheSize: v['p2p-cache-size'],
            p2pUploadLimit: v['p2p-upload-limit'],
            logFormat: v['log-format'],
          },
          io,
        );
      case 'status':
        return await (await import('./status.js')).statusCommand({ state: v.state, json }, io);
      case 'suspend':
      case 'resume':
        return await (await import('./status.js')).suspendCommand({ state: v.state, reason: v.reason, resume: command === 'resume' }, io);
      case 'watch':
        return await (await import('./watch.js')).watchCommand({ server: v.server, since: v.since, json, tokenFile: v['token-file'] }, io);
      case 'mage':
        if (positionals[0] === 'build') return await (await import('./mage.js')).mageBuildCommand({ out: v.out, kernelPackage: v['kernel-package'], node: v.node }, io);
        if (positionals[0] === 'run') return await (await import('./mage.js')).mageRunCommand({ template: v.template, disk: v.disk, set: v.set ?? [], kexec: v.kexec }, io);
        if (positionals[0] !== undefined) return reportError(io, new DragonflyError('DF_ERR_USAGE', `unknown mage subcommand "${positionals[0]}"`, {}, 'dragonfly mage run --help'));
        return await (await import('./mage.js')).mageCommand({ server: v.server, mac: v.mac, root: v.root, disk: v.disk, noReboot: v['no-reboot'], noP2p: v['no-p2p'] }, io);
      case 'peer':
        return await (await import('./peer.js')).peerCommand(
          {
            sub: positionals[0],
            url: positionals[1],
            sha256: v.sha256,
            server: v.server,
            out: v.out,
            listen: v.listen,
            uploadLimit: v['upload-limit'],
            downloadLimit: v['download-limit'],
            tokenFile: v['token-file'],
            linger: v.linger,
            pieceTimeout: v['piece-timeout'],
            originFallback: v['origin-fallback'],
            json: v.json,
          },
          io,
        );
      case 'p2p':
        return await (await import('./p2p.js')).p2pCommand({ sub: positionals[0], template: v.template, fleet: v.fleet, server: v.server, tokenFile: v['token-file'], sha256: v.sha256, state: v.state, json }, io);
    }
    return 1;
  } catch (e) {
    return reportError(io, e, json);
  }
}
