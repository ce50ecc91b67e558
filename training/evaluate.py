#!/usr/bin/env python
"""Evaluate a saved run on a dataset split: ``python training/evaluate.py RUN_DIR [--dataset NAME] [--split S] [--json OUT]``.

A thin wrapper: the logic lives in ``text_recognizer.evaluate`` (console script ``evaluate-run``).
See README.md.
"""

import sys

from text_recognizer.evaluate import evaluate_main

if __name__ == "__main__":
    sys.exit(evaluate_main())
