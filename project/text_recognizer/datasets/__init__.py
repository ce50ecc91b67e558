"""Datasets by name. Light on purpose: the arguments are declared here, the code loads lazily.

Every dataset accepts the common arguments (``data_dir``, ``subsample_fraction``,
``validation_fraction``, ``seed``) plus its own. Every number has an upper bound (``spec.Param``
insists): the sample counts are capped so a generated dataset fits in a few GB of memory.
"""

from __future__ import annotations

from text_recognizer.registry import Aliases, Entry
from text_recognizer.spec import SEED_MAX, Param

COMMON_ARGS: dict[str, Param] = {
    "data_dir": Param(str, None, nullable=True, help="folder holding the raw files already"),
    "subsample_fraction": Param(float, None, gt=0.0, max=1.0, nullable=True),
    "validation_fraction": Param(float, 0.1, min=0.0, lt=1.0),
    "seed": Param(int, 0, min=0, max=SEED_MAX),
}

EMNIST_SPLITS = ("byclass", "bymerge", "balanced", "letters", "digits", "mnist")
SYNTHETIC_CHARSETS = ("digits", "digits_upper", "alphanumeric")
LINE_CHAR_SOURCES = ("EmnistDataset", "MnistDataset")
SYNTHETIC_LINE_CHARSETS = ("digits", "digits_upper", "alphanumeric", "text", "names")
TEXT_SOURCES = ("auto", "words", "brown", "names")
IMAGE_TEXT_FORMATS = ("auto", "csv", "sidecar", "pylaia")

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
            "num_train": Param(int, 20000, min=1, max=1_000_000),
            "num_test": Param(int, 4000, min=1, max=200_000),
            "charset": Param(str, "digits_upper", choices=SYNTHETIC_CHARSETS),
            "image_size": Param(int, 28, min=16, max=128),
            "distortion": Param(float, 1.0, min=0.0, max=3.0, help="scales every distortion"),
        },
        kind="characters",
        help="digits and letters rendered with a bundled font and distorted; no download",
    ),
    "EmnistLinesDataset": Entry(
        "text_recognizer.datasets.emnist_lines:EmnistLinesDataset",
        {
            **COMMON_ARGS,
            "max_length": Param(
                int, 32, min=1, max=256, help="characters per line; width image_height x this"
            ),
            "image_height": Param(int, 28, min=16, max=128, help="28-px glyph lines scaled to it"),
            "min_overlap": Param(float, 0.0, min=0.0, lt=1.0),
            "max_overlap": Param(float, 0.33, min=0.0, lt=1.0),
            "num_train": Param(int, 10000, min=1, max=200_000),
            "num_test": Param(int, 2000, min=1, max=50_000),
            "char_source": Param(str, "EmnistDataset", choices=LINE_CHAR_SOURCES),
            "char_data_dir": Param(
                str, None, nullable=True, help="data_dir of the character dataset"
            ),
            "emnist_split": Param(str, "byclass", choices=EMNIST_SPLITS),
            "mnist_test_set_only": Param(
                bool, False, help="MnistDataset's test_set_only (the shared copy needs it)"
            ),
            "corpus_dir": Param(
                str, None, nullable=True, help="folder holding brown.zip (same as data_dir)"
            ),
        },
        kind="lines",
        help="lines of real EMNIST/MNIST glyphs along Brown-corpus text (or digit strings)",
    ),
    "IamLinesDataset": Entry(
        "text_recognizer.datasets.iam_lines:IamLinesDataset",
        {
            **COMMON_ARGS,
            "image_height": Param(int, 28, min=8, max=256),
            "image_width": Param(int, 952, min=16, max=8192),
            "max_length": Param(int, 96, min=1, max=512, help="longer lines are skipped, counted"),
            "skip_err": Param(bool, False, help="drop lines IAM marks as badly segmented"),
            "official_validation": Param(
                bool, True, help="validate on the Aachen validation forms (else a seeded carve)"
            ),
            "source": Param(
                str,
                "auto",
                choices=("auto", "official", "fsdl", "parquet"),
                help="raw layout: auto = official > FSDL zip > Teklia's parquet (HF copy)",
            ),
        },
        kind="lines",
        help="IAM handwritten lines (official lines/, FSDL's iamdb.zip or Teklia's parquet)",
    ),
    "KaggleNamesDataset": Entry(
        "text_recognizer.datasets.kaggle_names:KaggleNamesDataset",
        {
            **COMMON_ARGS,
            "image_height": Param(int, 64, min=8, max=512),
            "image_width": Param(int, 256, min=16, max=4096),
            "keep_aspect": Param(bool, False, help="resize keeping aspect (else crop/pad)"),
            "max_length": Param(int, 64, min=1, max=512, help="longer labels are skipped, counted"),
            "split_from_available": Param(
                float,
                None,
                gt=0.0,
                lt=1.0,
                nullable=True,
                help="test fraction of all available labelled images (when no official train)",
            ),
        },
        kind="lines",
        help="Kaggle handwritten names (landlord/handwriting-recognition)",
    ),
    "KaggleAzDataset": Entry(
        "text_recognizer.datasets.kaggle_az:KaggleAzDataset",
        {
            **COMMON_ARGS,
            "with_digits": Param(
                bool, False, help="add MNIST digits as classes 0-9 (letters become 10-35)"
            ),
            "mnist_dir": Param(str, None, nullable=True, help="MnistDataset's data_dir"),
            "mnist_test_set_only": Param(
                bool, False, help="MnistDataset's test_set_only (the shared copy needs it)"
            ),
            "test_fraction": Param(
                float, 0.2, gt=0.0, lt=1.0, help="of each letter, held out as test (seeded)"
            ),
        },
        kind="characters",
        help="Kaggle A-Z handwritten capitals CSV (sachinpatel21), optionally with MNIST digits",
    ),
    "SyntheticLinesDataset": Entry(
        "text_recognizer.datasets.synthetic_lines:SyntheticLinesDataset",
        {
            **COMMON_ARGS,
            "num_train": Param(int, 10000, min=1, max=200_000),
            "num_test": Param(int, 2000, min=1, max=50_000),
            "max_length": Param(int, 32, min=1, max=256),
            "charset": Param(str, "alphanumeric", choices=SYNTHETIC_LINE_CHARSETS),
            "image_height": Param(int, 28, min=16, max=128),
            "image_width": Param(int, 512, min=32, max=8192),
            "distortion": Param(float, 1.0, min=0.0, max=3.0, help="scales every distortion"),
            "letter_spacing": Param(
                float, 0.1, min=0.0, max=2.0, help="most extra space between letters (0.1: 10 %)"
            ),
            "text_source": Param(
                str,
                "auto",
                choices=TEXT_SOURCES,
                help="auto: names for the names charset, brown if corpus_dir, else words",
            ),
            "corpus_dir": Param(str, None, nullable=True, help="folder holding brown.zip"),
            "fonts": Param(
                list,
                None,
                nullable=True,
                item_type=str,
                max_items=256,
                help="font files, folders, globs (.ttf/.otf) or 'handwriting' (Debian's handwriting "
                "fonts); default: Pillow's bundled font",
            ),
        },
        kind="lines",
        help="text lines rendered with a bundled font (or `fonts`), distorted like handwriting",
    ),
    "ImageTextDataset": Entry(
        "text_recognizer.datasets.image_text:ImageTextDataset",
        {
            **COMMON_ARGS,
            "data_dir": Param(str, None, nullable=True, help="the folder (required)"),
            "format": Param(str, "auto", choices=IMAGE_TEXT_FORMATS),
            "image_height": Param(int, 64, min=8, max=512),
            "image_width": Param(int, 1024, min=16, max=8192),
            "keep_aspect": Param(bool, False, help="scale to fit whole (else fit_height)"),
            "max_length": Param(int, 128, min=1, max=512, help="longer ones are skipped, counted"),
            "charset": Param(
                str, None, nullable=True, help="the characters (default: the training ones)"
            ),
            "test_fraction": Param(float, 0.1, gt=0.0, lt=1.0, help="held out without test list"),
            "split_seed": Param(int, 2020, min=0, max=SEED_MAX, help="seeds the test carve"),
            "labels_file": Param(str, None, nullable=True, help="the CSV/TSV or gt.txt to read"),
            "train_list": Param(str, None, nullable=True, help="default: train.txt if there"),
            "validation_list": Param(str, None, nullable=True, help="default: validation.txt"),
            "test_list": Param(str, None, nullable=True, help="default: test.txt if there"),
            "workers": Param(int, 0, min=0, max=1024, help="decoding processes (0: all cores)"),
        },
        kind="lines",
        help="your own line images + transcripts (CSV/TSV, kraken .gt.txt or PyLaia gt.txt)",
    ),
}

# FSDL 2021-2022's data module names (its 2019-2020 labs used the names above).
DATASET_ALIASES = Aliases(
    "FSDL",
    same={
        "MNIST": "MnistDataset",
        "EMNIST": "EmnistDataset",
        "EMNISTLines": "EmnistLinesDataset",
        "EMNISTLines2": "EmnistLinesDataset",
        "IAMLines": "IamLinesDataset",
    },
    nearest={
        name: ("IamLinesDataset", "IAM's lines; paragraphs are read line by line (paragraph_ocr)")
        for name in ("IAMParagraphs", "IAMSyntheticParagraphs", "IAMOriginalAndSyntheticParagraphs")
    },
)
