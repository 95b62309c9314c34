#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs npm dependencies when
# missing, type-checks, then runs vitest (whose global setup installs and starts
# the local ClickHouse and Kafka broker when they are missing).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
npx tsc --noEmit
mkdir -p .warbler
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json=.warbler/vitest-results.json "$@" || status=$?
# A closing line any CI reader understands: "N passed, N failed".
if [ -f .warbler/vitest-results.json ]; then
  node -e 'const r=require("./.warbler/vitest-results.json");console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed`)'
fi
exit $status
