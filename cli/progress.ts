// Progress bars for work that takes long enough to wonder about: only on a terminal, on stderr, so
// piped output (--json, --markdown) stays clean. cli-progress draws; this decides when.
import { SingleBar, Presets } from 'cli-progress';

export interface Progress {
  update(done: number, total: number): void;
  stop(): void;
}

const quiet: Progress = { update() {}, stop() {} };

/** A bar labelled `label`, shown once the work has more than `minTotal` steps. */
export function progressBar(label: string, minTotal = 1000): Progress {
  if (!process.stderr.isTTY || process.env.CI) return quiet;
  let bar: SingleBar | undefined;
  return {
    update(done, total) {
      if (total < minTotal) return;
      if (!bar) {
        bar = new SingleBar({ format: `${label} [{bar}] {value}/{total}`, stream: process.stderr, clearOnComplete: true, hideCursor: true }, Presets.shades_classic);
        bar.start(total, done);
      } else bar.update(done);
    },
    stop() {
      bar?.stop();
    },
  };
}
