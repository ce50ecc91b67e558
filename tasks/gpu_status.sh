#!/usr/bin/env bash
# GPUs, their leases and holders (pid, run, since), free memory, and runs sharing the CPU.
# Pass --json for a machine-readable report; TEXT_RECOGNIZER_GPU_LEASES picks the lease folder.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m text_recognizer.leasing.gpu_manager status "$@"
