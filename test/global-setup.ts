// CLI and crash tests run the compiled `dragonfly` (bin/dragonfly.js → dist/). Build once before any test,
// so `npx vitest run` alone never tests a stale dist/.
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export default function setup(): void {
  // For iterating on in-process tests while another part of the tree does not compile yet.
  if (process.env.DRAGONFLY_SKIP_BUILD) return;
  const root = path.join(path.dirname(fileURLToPath(import.meta.url)), '..');
  execFileSync(process.execPath, [path.join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json'], { cwd: root, stdio: 'inherit' });
}
