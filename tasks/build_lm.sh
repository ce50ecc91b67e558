#!/usr/bin/env bash
# Character 6-gram LM from IAM lines.txt (Aachen test and validation forms and the paragraph
# benchmark's forms left out):
# build_lm.sh [OUT.arpa] [--order N] [--text MORE.txt] [--as-written]   (default data/processed/lm/iam_char6.arpa)
# (the options may come before or after OUT)
set -euo pipefail
cd "$(dirname "$0")/.."
source tasks/lib/args.sh
split_args "--order --text --names --iam --out" "$@"
out="${positional[0]:-data/processed/lm/iam_char6.arpa}"
iam="${TEXT_RECOGNIZER_SHARED_DATA:-../shared/data}/iam"
exec python -m text_recognizer.lm build --iam "$iam" --order 6 --out "$out" "${positional[@]:1}" "${flags[@]}"
