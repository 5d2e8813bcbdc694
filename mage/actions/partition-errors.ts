// Errors of the partition action, shaped like schemas/errors.ts (code, message, hint, data, toJSON).
// These codes are not yet in the one table of schemas/errors.ts: move them there (and into
// docs/errors.md) and make PartitionError a DragonflyError once that file takes new codes.
import type { ErrorSpec } from '../../schemas/errors.js';

const spec = (title: string, hint: string, status = 400): ErrorSpec => ({ title, hint, status });

export const PARTITION_ERRORS = {
  DF_ERR_PARTITION_LAYOUT: spec(
    'inconsistent partition layout',
    "only the last partition may use size 'rest'; an MBR table holds at most 4 partitions; names and labels must fit their limits",
  ),
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
} as const satisfies Record<string, ErrorSpec>;

export type PartitionErrorCode = keyof typeof PARTITION_ERRORS;

export class PartitionError extends Error {
  readonly code: PartitionErrorCode;
  readonly hint: string;
  readonly data: Record<string, unknown>;

  constructor(code: PartitionErrorCode, message: string, data: Record<string, unknown> = {}, hint?: string) {
    super(message);
    this.name = 'PartitionError';
    this.code = code;
    this.hint = hint ?? PARTITION_ERRORS[code].hint;
    this.data = data;
  }

  get status(): number {
    return PARTITION_ERRORS[this.code].status;
  }

  toJSON() {
    return { code: this.code, message: this.message, hint: this.hint, ...this.data };
  }
}
