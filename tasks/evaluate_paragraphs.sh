#!/usr/bin/env bash
# Paragraph OCR over the real IAM crops, CER against their ground truth: evaluate_paragraphs.sh RUN
set -euo pipefail
model="$(realpath "${1:?usage: tasks/evaluate_paragraphs.sh RUN_DIR_OR_WEIGHTS [--beam N] [--json]}")"
shift
cd "$(dirname "$0")/.."
iam="${TEXT_RECOGNIZER_SHARED_DATA:-../shared/data}/iam"
shopt -s nullglob
exec python -m text_recognizer.paragraph_ocr "$iam"/paragraphs_support/*.png \
    "$iam"/paragraphs_support/*.jpg --model "$model" \
    --ground-truth "$iam/paragraphs_support/data_by_file_id.json" \
    --ground-truth "$iam/ascii/lines.txt" "$@"
