import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
// @ts-expect-error: a plain .mjs build script without type declarations
import { generateTypes } from '../scripts/gen-types.mjs';

describe('schemas/types.ts', () => {
  it('is exactly what the schemas generate (run `npm run gen:types` after editing a schema)', async () => {
    const committed = fs.readFileSync(new URL('./types.ts', import.meta.url), 'utf8');
    expect(committed).toBe(await generateTypes());
  });
});
