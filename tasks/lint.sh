#!/usr/bin/env bash
# Lint and format check.
set -euo pipefail
cd "$(dirname "$0")/.."
ruff check . && ruff format --check .
