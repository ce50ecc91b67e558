#!/usr/bin/env bash
# Run the test suite (installs the test tools first).
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q -c constraints.txt -e '.[test]' && python -m pytest -q "$@"
