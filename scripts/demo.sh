#!/usr/bin/env bash
# The main job on the local default: installs what is missing, starts the local
# ClickHouse and Kafka broker, loads realistic demo data through Kafka, builds
# profiles and clusters, starts the API in the background and prints a report.
# Extra arguments go to `warbler demo` (e.g. --users 20000).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
exec ./bin/warbler.js demo "$@"
