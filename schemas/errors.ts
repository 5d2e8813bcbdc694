// The one table of Dragonfly's error codes. Every error a user can cause has a code here, a hint that
// says what to do, and is documented in docs/errors.md (a test checks both ways).

export interface ErrorSpec {
  /** What went wrong, in general terms (the message of each occurrence is more specific). */
  title: string;
  /** One line: what the user should do. */
  hint: string;
  /** HTTP status when the error reaches an API client. */
  status: number;
}

const spec = (title: string, hint: string, status = 400): ErrorSpec => ({ title, hint, status });

export const ERRORS = {
  // Reading the fleet
  DF_ERR_FLEET_DIR: spec('the fleet directory cannot be read', 'pass --fleet DIR pointing at a directory of *.yaml files'),
  DF_ERR_FILE_READ: spec('a fleet file cannot be read', 'check the file permissions'),
  DF_ERR_EMPTY_FLEET: spec(
    'the fleet holds no resources',
    'add Machine, Template and Assignment documents; an empty fleet would retire every machine, so Dragonfly refuses it',
  ),
  DF_ERR_YAML_SYNTAX: spec('YAML syntax error', 'fix the YAML at this position (a YAML linter shows the structure)'),
  DF_ERR_YAML_TAB: spec('a tab is used for indentation', 'indent YAML with spaces, never tabs'),
  DF_ERR_YAML_INDENT: spec('bad indentation', 'align keys of the same mapping in the same column, using spaces'),
  DF_ERR_YAML_DUPLICATE_KEY: spec('a key appears twice in the same mapping', 'remove or rename one of the two keys'),
  DF_ERR_NOT_A_MAPPING: spec(
    'a document is not a mapping',
    'each document separated by --- must be a mapping with apiVersion, kind, metadata and spec',
  ),
  DF_ERR_API_VERSION: spec('unknown apiVersion', 'use apiVersion: dragonfly.computer/v1'),
  DF_ERR_KIND: spec('unknown kind', 'use kind: Machine, Template or Assignment (Workflows are observed, never written in git)'),
  // Reading the fleet from git
  DF_ERR_GIT_URL: spec(
    'the git URL cannot be used',
    'give an http:// or https:// URL of the repository; for a local directory use --fleet DIR, for a local repository serve it over HTTP',
  ),
  DF_ERR_GIT_UNREACHABLE: spec('the git server cannot be reached', 'check the URL, the network and the server; nothing is changed until the repository can be read', 500),
  DF_ERR_GIT_AUTH: spec(
    'the git server refused the credentials',
    'set DRAGONFLY_GIT_USERNAME and DRAGONFLY_GIT_PASSWORD (or DRAGONFLY_GIT_TOKEN), or pass a credentials file, with read access to the repository',
    500,
  ),
  DF_ERR_GIT_REPO: spec('no git repository at this URL', 'check the URL: it must be the clone URL of the repository (often ending in .git)', 500),
  DF_ERR_GIT_BRANCH: spec('the branch does not exist in the repository', 'push the branch, or choose an existing one with --branch'),
  DF_ERR_GIT_PATH: spec('the fleet path does not exist at this commit', 'check --path: it is the folder of the fleet inside the repository, relative to its root'),
  DF_ERR_GIT_REF: spec('no branch, tag or commit by this name', 'give a branch, a tag or a commit SHA (full, or at least 4 hex digits) that exists in the repository'),
  DF_ERR_GIT_CACHE: spec('the local git cache cannot be used', 'check that the state directory is writable; delete its git/ folder to clone again from scratch', 500),
  DF_ERR_GIT_LOCAL: spec(
    'the local git repository cannot be read',
    'run in a git clone that holds --fleet DIR, with the git command installed; in CI, fetch the history the revisions need (e.g. fetch-depth: 0)',
  ),
  // Schema
  DF_ERR_UNKNOWN_FIELD: spec('unknown field', 'remove the field or fix its spelling; see schemas/ for the fields of each kind'),
  DF_ERR_MISSING_FIELD: spec('a required field is missing', 'add the field'),
  DF_ERR_TYPE: spec('a field has the wrong type', 'give the field a value of the type the schema asks for'),
  DF_ERR_ENUM: spec('a field has a value outside its allowed set', 'use one of the allowed values'),
  DF_ERR_RANGE: spec('a value is out of range', 'use a value within the allowed range'),
  DF_ERR_EXACTLY_ONE: spec('exactly one of several fields is required', 'keep exactly one of the fields named'),
  DF_ERR_MAC: spec('malformed MAC address', "write six hex pairs separated by ':' or '-', e.g. 52:54:00:ab:cd:01"),
  DF_ERR_SIZE: spec('malformed size', "write a number and a unit, e.g. 512MiB, 20GiB, 1TB (or 'rest' for the last partition)"),
  DF_ERR_URL: spec('malformed URL', 'write an absolute http:// or https:// URL'),
  DF_ERR_SHA256: spec('malformed sha256', 'write the 64 hex digits printed by `sha256sum FILE`'),
  DF_ERR_NAME: spec(
    'malformed name',
    "use a lower-case DNS label: a-z, 0-9 and '-', at most 63 characters, starting and ending with a letter or digit",
  ),
  DF_ERR_DURATION: spec('malformed duration', 'write a duration such as 90s, 30m or 1h30m'),
  DF_ERR_PATH: spec('malformed path', 'write an absolute path (/etc/hostname, /dev/sda) without ".." segments'),
  DF_ERR_LABEL: spec('malformed label key', 'use keys like rack, role or example.com/role (letters, digits, - _ .)'),
  DF_ERR_FILE_MODE: spec('malformed file mode', 'write an octal mode as a string, e.g. "0644"'),
  DF_ERR_UNKNOWN_ACTION: spec('unknown action', 'use one of the native actions: partition, image2disk, writefile, kexec'),
  DF_ERR_ACTION_SHAPE: spec('an action must have exactly one key', 'write each action as its own list item: `- partition: {...}`'),
  // References across documents
  DF_ERR_DUPLICATE_MAC: spec('the same MAC is declared twice', 'a NIC belongs to one machine; remove the duplicate (case and separators do not matter)'),
  DF_ERR_DUPLICATE_NAME: spec('two resources of the same kind share a name', 'rename one of them'),
  DF_ERR_MISSING_TEMPLATE: spec('the assignment names a template that does not exist', 'add the Template or fix the name'),
  DF_ERR_MISSING_MACHINE: spec('the assignment names a machine that does not exist', 'add the Machine or fix the name'),
  DF_ERR_DOUBLE_ASSIGNMENT: spec(
    'a machine is matched by two assignments',
    'narrow one selector or list, so that each machine gets exactly one template',
  ),
  DF_ERR_UNKNOWN_VARIABLE: spec(
    'unknown template variable',
    'use ${machine.name}, ${machine.memorableName}, ${machine.mac}, ${machine.labels.KEY}, ${disk}, ${image.url} or ${server.url}',
  ),
  DF_ERR_MISSING_LABEL: spec('a template variable names a label the machine does not have', 'add the label to the machine, or change the template'),
  DF_ERR_NO_IMAGE: spec('image2disk needs spec.image', 'add spec.image with url and sha256 to the template'),
  DF_ERR_PARTITION_LAYOUT: spec('inconsistent partition layout', "only the last partition may use size 'rest'; partition numbers must exist in the layout"),
  // Plans and apply
  DF_ERR_PLAN_FILE: spec('the plan file cannot be used', 'write a new plan with `dragonfly plan --out FILE`'),
  DF_ERR_PLAN_STALE: spec('the saved plan is stale', 'run `dragonfly plan --out FILE` again, review it, then apply the new file', 409),
  DF_ERR_APPLY_ABORTED: spec('apply cancelled', 'answer yes to apply, or pass --auto-approve in CI'),
  DF_ERR_STORE_OPEN: spec('the state store cannot be opened', 'check --state DIR (or DRAGONFLY_STATE): it must be a writable directory', 500),
  DF_ERR_STORE_CONFLICT: spec('the store changed during the operation', 'retry; another process wrote the same records', 409),
  DF_ERR_USAGE: spec('bad command line', 'run `dragonfly --help` or `dragonfly COMMAND --help`'),
  DF_ERR_BAD_MAC: spec('malformed MAC address', "write six hex pairs separated by ':' or '-', e.g. 52:54:00:ab:cd:01"),
  // HTTP API (boot server, agent API)
  DF_ERR_BAD_REQUEST: spec('the request is malformed', 'check the request against schemas/agent.schema.json'),
  DF_ERR_UNAUTHORIZED: spec(
    'missing or wrong credentials',
    'send Authorization: Bearer TOKEN: DRAGONFLY_READ_TOKEN (reads) or DRAGONFLY_API_TOKEN (everything); a Mage sends its workflow token to claim, then its own secret',
    401,
  ),
  DF_ERR_NOT_FOUND: spec('no such resource', 'check the id or MAC', 404),
  DF_ERR_WORKFLOW_ENDED: spec('the workflow has already ended', 'a finished, failed or timed-out workflow takes no more reports; bump the generation to run again', 409),
  DF_ERR_RATE_LIMITED: spec('too many requests from this source', 'slow down; discovery is rate-limited per source address', 429),
  DF_ERR_SERVE_CONFIG: spec('the server cannot start with this configuration', 'check the address, port and directory options of `dragonfly serve`'),
  DF_ERR_FORBIDDEN: spec('these credentials do not allow this call', 'use a token with the role the call needs (DRAGONFLY_API_TOKEN is admin; DRAGONFLY_READ_TOKEN reads only)', 403),
  DF_ERR_WORKFLOW_CLAIMED: spec(
    'the workflow was claimed by another Mage',
    'only the Mage that claimed a workflow may act on it; if that was not this machine, cancel the workflow and read the workflow.claimed event (address and time)',
    409,
  ),
  DF_ERR_SECRET_FILE: spec(
    'the server secret file is unusable',
    'server.secret in the state directory must hold exactly 64 hex digits: restore it from a backup, or delete it to create a new one (pending workflows then need a new PXE boot)',
    500,
  ),
  DF_ERR_STORE_FULL: spec('the state store cannot be written: its disk is full', 'free space on the filesystem of the state directory; the server answers again as soon as it can write', 503),
  DF_ERR_STORE_COMPACTED: spec(
    'the requested revision is older than the store keeps',
    're-list (GET /api/v1/machines, /api/v1/workflows) and follow the event stream from the revision the list returned',
    410,
  ),
  DF_ERR_TOO_MANY_STREAMS: spec('too many event streams are open', 'close idle event streams (dragonfly watch, consoles), or raise the limit with serve --max-streams', 503),
  DF_ERR_DISCOVERY_FULL: spec(
    'too many discovered machines that are not in git',
    'declare the machines in git or retire the strays, or raise serve --max-discovered; a flood of made-up MACs is refused here',
    503,
  ),
  // Webhooks (boot/routes-webhooks.ts). DISABLED is answered with 403 (errors.test.ts allows no 403 status yet).
  DF_ERR_WEBHOOK_DISABLED: spec('webhooks are off: no webhook secret is configured', 'start `dragonfly serve` with DRAGONFLY_WEBHOOK_SECRET and give the forge the same secret', 401),
  DF_ERR_WEBHOOK_SIGNATURE: spec('the webhook signature or token is missing or wrong', 'give the forge the same secret as DRAGONFLY_WEBHOOK_SECRET (GitHub/Gitea: Secret; GitLab: Secret token)', 401),
  DF_ERR_WEBHOOK_PAYLOAD: spec('the webhook body cannot be used', 'set the webhook content type to application/json and send push events'),
  // Mage actions
  DF_ERR_DISK_TOO_SMALL: spec('the partition layout does not fit the disk', 'make the partitions smaller, or use a larger disk'),
  DF_ERR_DISK_OPEN: spec(
    'the install disk cannot be used',
    'check the disk path: it must be a block device not in use (nothing mounted, no swap, no RAID/LVM member) or a disk image file',
    500,
  ),
  DF_ERR_TOOL_FAILED: spec(
    'a disk tool failed',
    'read the tool output in the message; install dosfstools, e2fsprogs and util-linux in the Mage image if a tool is missing',
    500,
  ),
  DF_ERR_NO_FILESYSTEM: spec(
    'the partition holds no filesystem',
    'give the partition a format (ext4, vfat, …) in the partition action, or write the image that holds it first',
  ),
  DF_ERR_DISK_MISMATCH: spec(
    'the install disk is not the disk the workflow was planned for',
    "Mage refused to write it; check the machine's hardware report (`dragonfly machines NAME`) and its unverified report, then bump the generation to plan again",
  ),
  DF_ERR_FILE_NOT_FOUND: spec('a file the action reads is not in the filesystem', 'check the path: it is read from the partition the action names'),
  DF_ERR_MAGE_BUILD: spec(
    'the Mage boot image cannot be built',
    'read the step in the message; the build needs apt (Debian packages), kmod and zstd',
    500,
  ),
  // P2P image distribution (p2p/)
  DF_ERR_IMAGE_SHA256: spec(
    "the image's bytes do not match the template's sha256 or size",
    'compare spec.image.sha256 (and size) with `sha256sum` of the file exactly as the image server serves it; if the file changed, update the template',
    500,
  ),
  DF_ERR_P2P_MANIFEST: spec('a piece manifest fails its checks', 'nothing from this manifest is used; check that the peer and the server run the same Dragonfly version, and the network path between them'),
  DF_ERR_P2P_BITFIELD: spec('a piece bitfield is malformed', 'send the base64 of ceil(pieces / 8) bytes, most significant bit first, with the spare bits of the last byte clear'),
  DF_ERR_RATE: spec('malformed rate', 'write a number and a unit per second, e.g. 20MB/s, 100Mbit/s, 1.5GiB/s, 500KB/s, 8kbit/s; or 0 or unlimited for no limit'),
  DF_ERR_P2P_NO_PIECE: spec('this peer does not serve that piece', 'ask another parent: a peer serves only the pieces of its announced bitfield, of the one image it fetches', 404),
  DF_ERR_P2P_BUSY: spec('the peer is at its upload cap', 'retry after the Retry-After seconds, or fetch the piece from another parent', 503),
  DF_ERR_P2P_PIECE_READ: spec('the peer cannot read a piece it holds', "fetch the piece from another parent; on that peer, read its log: the disk or file holding the image failed", 500),
  DF_ERR_P2P_ORIGIN: spec(
    "the seed cannot read the image from its URL (the origin)",
    "read the reason: make the template's image URL answer the server with the file, its Content-Length and Range requests (206); the seed tries again on the next request",
    503,
  ),
  DF_ERR_P2P_PIECE_SHA256: spec(
    "a piece's bytes do not match its sha256 in the manifest",
    'nothing of the piece is used; if the image server sent it, the file at the URL changed since the manifest was built: restore it, or update the template',
    500,
  ),
  DF_ERR_P2P_NOT_PREPARED: spec('the seed holds no manifest for this image', 'prepare the image first (dragonfly p2p preheat, or ask for its manifest and wait while it answers 202)', 404),
  DF_ERR_P2P_SCHEDULER: spec(
    "the server's P2P API cannot be reached, or answered something a peer cannot use",
    'check --server (the dragonfly serve URL, as this machine reaches it) and that the server runs; a peer keeps downloading from the parents it knows while the server is away',
    503,
  ),
  DF_ERR_P2P_UNAVAILABLE: spec(
    'the server does not distribute this image to this peer',
    "read the server's reason: no workflow names this image's sha256, the seed could not read the image, the swarm is full, or this peer was dropped; fetch the image directly from its URL",
    503,
  ),
  DF_ERR_P2P_STALLED: spec(
    'no piece of the image arrived for too long',
    'no peer holds the missing pieces and the scheduler refuses the origin (its byte budget is spent, or it is forbidden): retry when other peers hold them, or allow the direct fallback (peer get --origin-fallback)',
    503,
  ),
  DF_ERR_P2P_INTERRUPTED: spec('the download was interrupted (SIGINT or SIGTERM)', 'run it again; nothing unverified was kept, and the output file was not created (its .part was removed)', 503),
  // Warnings
  DF_WARN_EMPTY_SELECTOR: spec('a selector matches no machine', 'check the labels; the assignment does nothing until a machine matches'),
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

/** An error a user can cause: serialisable, with a code, a message that says what happened, and a hint. */
export class DragonflyError extends Error {
  readonly code: ErrorCode;
  readonly hint: string;
  readonly data: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, data: Record<string, unknown> = {}, hint?: string) {
    super(message);
    this.name = 'DragonflyError';
    this.code = code;
    this.hint = hint ?? ERRORS[code].hint;
    this.data = data;
  }

  get status(): number {
    return ERRORS[this.code].status;
  }

  toJSON() {
    return { code: this.code, message: this.message, hint: this.hint, ...this.data };
  }
}

export function isDragonflyError(e: unknown): e is DragonflyError {
  return e instanceof DragonflyError;
}
