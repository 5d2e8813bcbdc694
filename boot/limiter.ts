// A fixed-window counter per key (a source address): enough to stop one source from flooding the store
// with made-up MACs, without any state that outlives a minute.
export class WindowLimiter {
  private window = 0;
  private counts = new Map<string, number>();

  constructor(private readonly perWindow: number, private readonly windowMs = 60_000, private readonly now = () => Date.now()) {}

  /** Count one event for `key`; false when the key is over its budget in this window. */
  take(key: string): boolean {
    const w = Math.floor(this.now() / this.windowMs);
    if (w !== this.window) {
      this.window = w;
      this.counts.clear();
    }
    const n = (this.counts.get(key) ?? 0) + 1;
    this.counts.set(key, n);
    return n <= this.perWindow;
  }
}
