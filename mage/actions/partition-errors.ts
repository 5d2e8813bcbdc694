// The partition action's errors are DragonflyErrors with codes from the one table in schemas/errors.ts.
import { DragonflyError, type ErrorCode } from '../../schemas/errors.js';

export type PartitionErrorCode = Extract<ErrorCode, 'DF_ERR_PARTITION_LAYOUT' | 'DF_ERR_DISK_TOO_SMALL' | 'DF_ERR_DISK_OPEN' | 'DF_ERR_TOOL_FAILED'>;

export class PartitionError extends DragonflyError {
  constructor(code: PartitionErrorCode, message: string, data: Record<string, unknown> = {}, hint?: string) {
    super(code, message, data, hint);
    this.name = 'PartitionError';
  }
}
