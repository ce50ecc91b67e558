"""Datasets by name. Light on purpose: the arguments are declared here, the code loads lazily.

Every dataset accepts the common arguments (``data_dir``, ``subsample_fraction``,
``validation_fraction``, ``seed``) plus its own.
"""

from __future__ import annotations

from text_recognizer.registry import Entry
from text_recognizer.spec import Param

COMMON_ARGS: dict[str, Param] = {
    "data_dir": Param(str, None, nullable=True, help="folder holding the raw files already"),
    "subsample_fraction": Param(float, None, gt=0.0, max=1.0, nullable=True),
    "validation_fraction": Param(float, 0.1, min=0.0, lt=1.0),
    "seed": Param(int, 0, min=0),
}

EMNIST_SPLITS = ("byclass", "bymerge", "balanced", "letters", "digits", "mnist")
SYNTHETIC_CHARSETS = ("digits", "digits_upper", "alphanumeric")

DATASETS: dict[str, Entry] = {
    "EmnistDataset": Entry(
        "text_recognizer.datasets.emnist:EmnistDataset",
        {
            **COMMON_ARGS,
            "split": Param(str, "byclass", choices=EMNIST_SPLITS),
            "balance": Param(bool, False, help="subsample byclass so classes are near-equal"),
        },
        kind="characters",
        help="EMNIST handwritten characters (NIST matlab.zip)",
    ),
    "MnistDataset": Entry(
        "text_recognizer.datasets.mnist:MnistDataset",
        {
            **COMMON_ARGS,
            "test_set_only": Param(
                bool, False, help="use only the official 10k test files, split into train/test"
            ),
            "test_fraction": Param(float, 0.2, gt=0.0, lt=1.0),
        },
        kind="characters",
        help="MNIST handwritten digits (four idx .gz files)",
    ),
    "SyntheticCharactersDataset": Entry(
        "text_recognizer.datasets.synthetic_characters:SyntheticCharactersDataset",
        {
            **COMMON_ARGS,
            "num_train": Param(int, 20000, min=1),
            "num_test": Param(int, 4000, min=1),
            "charset": Param(str, "digits_upper", choices=SYNTHETIC_CHARSETS),
            "image_size": Param(int, 28, min=16, max=128),
            "distortion": Param(float, 1.0, min=0.0, max=3.0, help="scales every distortion"),
        },
        kind="characters",
        help="digits and letters rendered with a bundled font and distorted; no download",
    ),
}
