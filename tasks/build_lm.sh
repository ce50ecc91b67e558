#!/usr/bin/env bash
# Character 6-gram LM from IAM lines.txt (Aachen test and validation forms and the paragraph
# benchmark's forms left out):
# build_lm.sh [OUT.arpa] [--order N] [--text MORE.txt] [--as-written]   (default data/processed/lm/iam_char6.arpa)
set -euo pipefail
cd "$(dirname "$0")/.."
out="data/processed/lm/iam_char6.arpa"
if [[ $# -gt 0 && "$1" != -* ]]; then  # an option (--order 5) is passed on, not taken as OUT
  out="$1"
  shift
fi
iam="${TEXT_RECOGNIZER_SHARED_DATA:-../shared/data}/iam"
exec python -m text_recognizer.lm build --iam "$iam" --order 6 --out "$out" "$@"
