// What image2disk writes to, and how it fails: shared by the download loop and the native decode pipeline.

export interface Target {
  /** A block device or a plain file (disk image). */
  path: string;
  /** Where the image starts, in bytes (a partition of a disk image); 0 for a whole disk or a partition device. */
  offset: number;
  /** How many bytes the target holds. */
  capacity: number;
}

export class Image2DiskError extends Error {
  constructor(message: string, readonly retryable = false) {
    super(message);
  }
}
