#!/usr/bin/env bash
# LM weight and bonus tuned on a run's validation split: tune_lm.sh RUN LM.arpa [--json OUT] [--limit N]
# (the flags may come before, between or after RUN and LM.arpa)
set -euo pipefail
source "$(dirname "$0")/lib/args.sh"
split_args "--beam --weights --bonuses --limit --json --lm" "$@"
usage="usage: tasks/tune_lm.sh RUN_DIR_OR_WEIGHTS LM.arpa [--json OUT]"
run="$(realpath "${positional[0]:?$usage}")"
lm="$(realpath "${positional[1]:?$usage}")"
cd "$(dirname "$0")/.."
exec python -m text_recognizer.lm tune "$run" --lm "$lm" "${positional[@]:2}" "${flags[@]}"
