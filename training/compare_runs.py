#!/usr/bin/env python
"""Compare runs: ``python training/compare_runs.py [runs/<group> ...] [--sort val_loss] [--desc]
[--columns name,val_cer,...] [--format table|csv|json] [--csv FILE] [--json FILE] [--wide]
[--plot out.png | --no-plot]``.

Prints what differs in the runs' configs, their key metrics, status and wall time, sorted by a metric
and fitted to the terminal (or chosen columns, as CSV/JSON for pandas), and saves a plot of their
training curves. A thin wrapper: the logic lives in
``text_recognizer.orchestration.compare``. See README.md, "Tracking and sweeps".
"""

import sys

from text_recognizer.orchestration.compare import compare_main

if __name__ == "__main__":
    sys.exit(compare_main())
