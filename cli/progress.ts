// Progress bars for work that takes long enough to wonder about: only on a terminal, on stderr, so
// piped output (--json, --markdown) stays clean. cli-progress draws; this decides when.
import { createRequire } from 'node:module';
import type { SingleBar } from 'cli-progress';

// cli-progress is loaded only when a bar is drawn (a terminal and enough work); a piped command never needs it.
const require = createRequire(import.meta.url);

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
        const { SingleBar: Bar, Presets } = require('cli-progress') as typeof import('cli-progress');
        bar = new Bar({ format: `${label} [{bar}] {value}/{total}`, stream: process.stderr, clearOnComplete: true, hideCursor: true }, Presets.shades_classic);
        bar.start(total, done);
      } else bar.update(done);
    },
    stop() {
      bar?.stop();
    },
  };
}
