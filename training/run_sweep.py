#!/usr/bin/env python
"""Run one sweep trial: ``python training/run_sweep.py [--config=BASE.json] --network_args.layer_size=256 ...``.

The program of every sweep YAML: ``wandb agent`` and ``training/local_sweep.py`` both call it with one
``--dotted.key=value`` per sweep parameter. A thin wrapper: the logic lives in
``text_recognizer.orchestration.trial_args``. See README.md, "Tracking and sweeps".
"""

import sys

from text_recognizer.orchestration.trial_args import run_sweep_main

if __name__ == "__main__":
    sys.exit(run_sweep_main())
