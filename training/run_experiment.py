#!/usr/bin/env python
"""Run one experiment from a JSON config: ``python training/run_experiment.py CONFIG [--gpu=N] [--nowandb]
[--no-save] [--keep-checkpoints] [--print-config] [--KEY.SUB=VALUE ...]`` (or ``--resume RUN_DIR``).

A thin wrapper: the logic lives in ``text_recognizer.run.cli``. See README.md.
"""

import sys

from text_recognizer.run.cli import run_experiment_main

if __name__ == "__main__":
    sys.exit(run_experiment_main())
