// The one thing the picker and the scheduler need to know about a set of pieces: whether it holds a piece.
// A Set<number>, a compact bitfield, or a view over another peer's holdings all satisfy it.
export interface PieceSet {
  has(piece: number): boolean;
}

/** A piece index a peer may name: a whole number in [0, pieces). Anything else from the wire is ignored. */
export function isPieceIndex(piece: unknown, pieces: number): piece is number {
  return typeof piece === 'number' && Number.isInteger(piece) && piece >= 0 && piece < pieces;
}
