#!/usr/bin/env bash
# `npm test`: everything the test suite needs, then every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
[ -d node_modules ] || npm install --no-audit --no-fund
node scripts/gen-types.mjs --check
node scripts/gen-validators.mjs --check
npx tsc -p tsconfig.test.json
npm run build --silent
npx vitest run "$@"
