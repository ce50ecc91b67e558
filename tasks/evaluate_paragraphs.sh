#!/usr/bin/env bash
# Paragraph OCR over the real IAM crops, CER against their ground truth: evaluate_paragraphs.sh RUN
# (the flags may come before or after RUN)
set -euo pipefail
source "$(dirname "$0")/lib/args.sh"
split_args "--beam --lm --lm-weight --lm-bonus --ground-truth --model" "$@"
model="$(realpath "${positional[0]:?usage: tasks/evaluate_paragraphs.sh RUN_DIR_OR_WEIGHTS [--beam N] [--json]}")"
set -- "${positional[@]:1}" "${flags[@]}"
cd "$(dirname "$0")/.."
iam="${TEXT_RECOGNIZER_SHARED_DATA:-../shared/data}/iam"
shopt -s nullglob
exec python -m text_recognizer.paragraph_ocr "$iam"/paragraphs_support/*.png \
    "$iam"/paragraphs_support/*.jpg --model "$model" \
    --ground-truth "$iam/paragraphs_support/data_by_file_id.json" \
    --ground-truth "$iam/ascii/lines.txt" "$@"
