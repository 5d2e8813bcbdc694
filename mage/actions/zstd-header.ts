// The uncompressed size a zstd frame declares in its header (RFC 8878 §3.1.1.1), when it declares one.
// `zstd FILE` writes it whenever it knows the input size, so most images say how big they are in their
// first bytes: image2disk refuses an image that cannot fit before writing anything.

const MAGIC = 0xfd2fb528;

/** The Frame_Content_Size of the first frame, or undefined when absent or `head` is too short to tell. */
export function zstdContentSize(head: Uint8Array): number | undefined {
  if (head.byteLength < 6) return undefined;
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  if (view.getUint32(0, true) !== MAGIC) return undefined;
  const descriptor = head[4]!;
  const fcsFlag = descriptor >> 6;
  const singleSegment = (descriptor >> 5) & 1;
  const dictIdBytes = [0, 1, 2, 4][descriptor & 3]!;
  const fcsBytes = fcsFlag === 0 ? singleSegment : [0, 2, 4, 8][fcsFlag]!;
  if (fcsBytes === 0) return undefined;
  const at = 5 + (singleSegment ? 0 : 1) + dictIdBytes;
  if (head.byteLength < at + fcsBytes) return undefined;
  switch (fcsBytes) {
    case 1:
      return view.getUint8(at);
    case 2:
      return view.getUint16(at, true) + 256;
    case 4:
      return view.getUint32(at, true);
    default:
      return Number(view.getBigUint64(at, true));
  }
}
