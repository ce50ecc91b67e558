#!/usr/bin/env bash
# LM weight and bonus tuned on a run's validation split: tune_lm.sh RUN LM.arpa [--json OUT] [--limit N]
set -euo pipefail
run="$(realpath "${1:?usage: tasks/tune_lm.sh RUN_DIR_OR_WEIGHTS LM.arpa [--json OUT]}")"
lm="$(realpath "${2:?usage: tasks/tune_lm.sh RUN_DIR_OR_WEIGHTS LM.arpa [--json OUT]}")"
shift 2
cd "$(dirname "$0")/.."
exec python -m text_recognizer.lm tune "$run" --lm "$lm" "$@"
