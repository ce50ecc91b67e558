#!/usr/bin/env bash
# Character 6-gram LM from IAM lines.txt (Aachen test forms and paragraph-crop forms left out):
# build_lm.sh [OUT.arpa] [--order N] [--text MORE.txt]   (default data/processed/lm/iam_char6.arpa)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-data/processed/lm/iam_char6.arpa}"
shift || true
iam="${TEXT_RECOGNIZER_SHARED_DATA:-../shared/data}/iam"
exec python -m text_recognizer.lm build --iam "$iam" --order 6 --out "$out" "$@"
