#!/usr/bin/env python
"""Run a sweep YAML offline: ``python training/local_sweep.py training/sweep_emnist.yaml [--count N] [--jobs J] [--state DIR]``.

The same YAML ``wandb sweep`` takes, run with no W&B server (W&B's semantics, optuna's samplers);
interrupted sweeps resume where they stopped. A thin wrapper: the logic lives in
``text_recognizer.orchestration.local_sweep``. See README.md, "Tracking and sweeps".
"""

import sys

from text_recognizer.orchestration.local_sweep import local_sweep_main

if __name__ == "__main__":
    sys.exit(local_sweep_main())
