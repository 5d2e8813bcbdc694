// Retransmission timeout of one transfer: pure. RFC 1123 §4.2.3.2 requires TFTP to use an adaptive
// timeout; this is the RFC 6298 estimator (SRTT, RTTVAR, exponential backoff) with TFTP-sized bounds.

/** Lower bound of the adaptive timeout: well above LAN round trips, low enough that a lost block costs little. */
export const MIN_RTO_MS = 50;

export class RetransmitTimer {
  private srtt: number | undefined;
  private rttvar = 0;
  private backoffs = 0;

  /**
   * @param maxMs the longest wait, and the wait before any round trip was measured (RFC 6298 §2.1)
   * @param minMs the shortest wait; equal to maxMs for a fixed timeout (a client's RFC 2349 timeout option)
   */
  constructor(
    private readonly maxMs: number,
    private readonly minMs = Math.min(MIN_RTO_MS, maxMs),
  ) {}

  /** The wait before the next retransmission. */
  current(): number {
    const base = this.srtt === undefined ? this.maxMs : this.srtt + Math.max(1, 4 * this.rttvar);
    return Math.min(this.maxMs, Math.max(this.minMs, base) * 2 ** this.backoffs);
  }

  /** True when the next wait is the longest one: only such timeouts count against the retry limit. */
  atMaximum(): boolean {
    return this.current() >= this.maxMs;
  }

  /** A round trip measured on a packet that was sent once (Karn: never on a retransmitted one). RFC 6298 §2.2–2.3. */
  sample(rttMs: number): void {
    if (this.srtt === undefined) {
      this.srtt = rttMs;
      this.rttvar = rttMs / 2;
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - rttMs);
      this.srtt = 0.875 * this.srtt + 0.125 * rttMs;
    }
  }

  /** RFC 6298 §5.5: double the wait after a timeout. */
  backoff(): void {
    if (!this.atMaximum()) this.backoffs++;
  }

  /** New data was acknowledged: the backoff ends. */
  progress(): void {
    this.backoffs = 0;
  }
}
