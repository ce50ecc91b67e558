#!/usr/bin/env python
"""Print one run_experiment command per experiment of a file, for GNU parallel.

    python training/prepare_experiments.py training/experiments/sample.json | parallel -j2

A thin wrapper: the logic lives in ``text_recognizer.orchestration.prepare``. See README.md.
"""

import sys

from text_recognizer.orchestration.prepare import prepare_experiments_main

if __name__ == "__main__":
    sys.exit(prepare_experiments_main())
