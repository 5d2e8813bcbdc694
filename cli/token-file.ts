// API tokens on the command line: the first line of --token-file, else the first environment variable set.
import fs from 'node:fs';

/** The first line of `file` (trimmed; '' when empty), or else the first non-empty of `env`. */
export function tokenFrom(file: string | undefined, ...env: (string | undefined)[]): string | undefined {
  if (file) return fs.readFileSync(file, 'utf8').split('\n')[0]!.trim();
  return env.find((e) => e) || undefined;
}
