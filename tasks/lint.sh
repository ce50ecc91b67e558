#!/usr/bin/env bash
# Lint and format check with the ruff that setup.py pins (another version may answer otherwise).
set -euo pipefail
cd "$(dirname "$0")/.."
pinned="$(sed -n 's/.*"ruff==\([0-9.]*\)".*/\1/p' setup.py)"
found="$(ruff --version 2>/dev/null | awk '{print $NF}')" || found=""
if [[ "$found" != "$pinned" ]]; then
  echo "error: ruff ${found:-(none)} is not the pinned $pinned: pip install -c constraints.txt -e '.[test]' (or pip install ruff==$pinned)" >&2
  exit 2
fi
ruff check . && ruff format --check .
