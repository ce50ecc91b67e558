"""Write the tour notebooks from the cell sources below, without outputs (so git holds no outputs).

Edit the cells here, then run ``python notebooks/make_notebooks.py``; tests/test_notebooks.py runs
every notebook top to bottom and checks that the committed files match this script and hold no
outputs, and that every cell of kind ``"figure"`` (a code cell tagged ``figure``) shows an image
and no other cell does. Each notebook works offline: parts whose data is missing in ../shared/data print a note.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
# A code cell meant to show a figure: tagged so, and tests/test_notebooks.py checks that it does.
FIGURE = "figure"

SETUP = """\
%matplotlib inline
import matplotlib.pyplot as plt
import numpy as np

from text_recognizer.paths import SHARED_DATA_DIR

def show(images, titles=None, cols=8, size=1.5, aspect=1.0):
    \"\"\"A grid of grayscale images with optional titles.\"\"\"
    images = list(images)
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * aspect * cols, size * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, im) in enumerate(zip(axes.flat, images)):
        ax.imshow(im, cmap="gray")
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=8)
    plt.tight_layout()
    plt.show()

def missing(path):
    \"\"\"True (and a printed note) when a shared data path is absent: the part is skipped.\"\"\"
    if not path.exists():
        print(f"skipped: {path} not found (set TEXT_RECOGNIZER_SHARED_DATA to the shared data)")
        return True
    return False

print("shared data:", SHARED_DATA_DIR, "(present)" if SHARED_DATA_DIR.exists() else "(missing)")
"""

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    "01-character-datasets.ipynb": [
        (
            "markdown",
            "# Character datasets\n\nSynthetic characters (no download), real MNIST "
            "digits from `../shared/data/mnist` and EMNIST samples.",
        ),
        ("code", SETUP),
        ("markdown", "## Synthetic characters\n\nRendered with a bundled font, then distorted."),
        (
            "figure",
            """\
from text_recognizer.datasets.synthetic_characters import SyntheticCharactersDataset

synth = SyntheticCharactersDataset(num_train=400, num_test=100, charset="digits_upper").load_or_generate_data()
print(synth.summary())
show(synth.x_train[:16], [synth.mapping[int(i)] for i in synth.y_train[:16]])
counts = np.bincount(synth.y_train, minlength=len(synth.mapping))
print("classes:", len(synth.mapping), " per class min/max:", counts.min(), counts.max())
""",
        ),
        (
            "markdown",
            "## Real MNIST digits\n\nThe shared copy holds only the 10k test files: "
            "`test_set_only` splits them into train and test.",
        ),
        (
            "figure",
            """\
mnist_dir = SHARED_DATA_DIR / "mnist"
if not missing(mnist_dir / "t10k-images-idx3-ubyte.gz"):
    from text_recognizer.datasets.mnist import MnistDataset

    mnist = MnistDataset(data_dir=str(mnist_dir), test_set_only=True).load_or_generate_data()
    print(mnist.summary())
    show(mnist.x_train[:16], [mnist.mapping[int(i)] for i in mnist.y_train[:16]])
    print("mean ink per digit:", {mnist.mapping[d]: round(float(mnist.x_train[mnist.y_train == d].mean()), 1) for d in range(10)})
""",
        ),
        (
            "markdown",
            "## EMNIST samples\n\nThe shared folder has sample glyphs and the class mappings.",
        ),
        (
            "figure",
            """\
emnist_dir = SHARED_DATA_DIR / "emnist"
if not missing(emnist_dir):
    from PIL import Image

    pngs = sorted((emnist_dir / "support").glob("*.png"))
    if pngs:
        show([np.array(Image.open(p).convert("L")) for p in pngs], [p.stem for p in pngs], cols=len(pngs))
    mapping = emnist_dir / "emnist-byclass-mapping.txt"
    if mapping.exists():
        rows = [line.split() for line in mapping.read_text().splitlines() if line.strip()]
        print(f"byclass: {len(rows)} classes:", "".join(chr(int(code)) for _, code in rows))
""",
        ),
    ],
    "02-emnist-lines.ipynb": [
        (
            "markdown",
            "# EMNIST lines\n\nLines made by pasting real handwritten glyphs side by "
            "side, with random overlap. Here the glyphs are real MNIST digits; text lines use the "
            "Brown corpus when `../shared/data/corpus/brown.zip` is there.",
        ),
        ("code", SETUP),
        (
            "figure",
            """\
mnist_dir = SHARED_DATA_DIR / "mnist"
if not missing(mnist_dir / "t10k-images-idx3-ubyte.gz"):
    from text_recognizer import decoding
    from text_recognizer.datasets.emnist_lines import EmnistLinesDataset

    lines = EmnistLinesDataset(
        char_source="MnistDataset", char_data_dir=str(mnist_dir), mnist_test_set_only=True,
        max_length=12, num_train=200, num_test=50,
    ).load_or_generate_data()
    print(lines.summary())
    texts = decoding.label_texts(lines.y_train[:6], lines.mapping)
    show(lines.x_train[:6], texts, cols=1, size=1.0, aspect=lines.x_train.shape[2] / lines.x_train.shape[1])
    lengths = [len(t) for t in decoding.label_texts(lines.y_train, lines.mapping)]
    print("characters per line: min", min(lengths), "mean", round(float(np.mean(lengths)), 1), "max", max(lengths))
""",
        ),
        (
            "markdown",
            "## Brown-corpus text\n\nThe same sentences rendered as synthetic lines "
            "(MNIST has no letters).",
        ),
        (
            "figure",
            """\
corpus = SHARED_DATA_DIR / "corpus"
if not missing(corpus / "brown.zip"):
    from text_recognizer import decoding
    from text_recognizer.datasets.synthetic_lines import SyntheticLinesDataset

    brown = SyntheticLinesDataset(
        charset="text", text_source="brown", corpus_dir=str(corpus), max_length=32,
        num_train=100, num_test=20,
    ).load_or_generate_data()
    show(brown.x_train[:5], decoding.label_texts(brown.y_train[:5], brown.mapping), cols=1, size=1.0,
         aspect=brown.x_train.shape[2] / brown.x_train.shape[1])
""",
        ),
    ],
    "03-iam-lines.ipynb": [
        (
            "markdown",
            "# IAM lines\n\nStatistics of the real `lines.txt`, the sample line "
            "images and the paragraph crops in `../shared/data/iam`.",
        ),
        ("code", SETUP),
        (
            "figure",
            """\
iam = SHARED_DATA_DIR / "iam"
lines_txt = iam / "ascii" / "lines.txt"
if not missing(lines_txt):
    from collections import Counter

    from text_recognizer.datasets.iam_lines import parse_lines_txt

    lines = parse_lines_txt(lines_txt.read_text(encoding="utf-8", errors="replace"))
    texts = [line.text for line in lines]
    lengths = np.array([len(t) for t in texts])
    print(f"{len(lines)} lines from {len({line.form_id for line in lines})} forms")
    print(f"characters per line: mean {lengths.mean():.1f}, 95th pct {np.percentile(lengths, 95):.0f}, max {lengths.max()}")
    chars = Counter("".join(texts))
    print(f"{len(chars)} distinct characters; most common:", chars.most_common(12))
    plt.hist(lengths, bins=40)
    plt.xlabel("characters per line")
    plt.show()
""",
        ),
        (
            "figure",
            """\
from PIL import Image

support = SHARED_DATA_DIR / "iam" / "lines_support"
if not missing(support):
    for p in sorted(support.glob("*.png")):
        im = np.array(Image.open(p).convert("L"))
        print(im.shape, repr(p.stem))
        show([im], cols=1, size=1.2, aspect=im.shape[1] / im.shape[0])
""",
        ),
        (
            "figure",
            """\
paragraphs = SHARED_DATA_DIR / "iam" / "paragraphs_support"
if not missing(paragraphs):
    crops = sorted(paragraphs.glob("*.png"))[:3]
    show([np.array(Image.open(p).convert("L")) for p in crops], [p.stem for p in crops], cols=3, size=4)
""",
        ),
        (
            "markdown",
            "Paragraph OCR splits a page into lines before a line model reads them "
            "(`paragraph_ocr.segment_lines`: the ink's row profile). Each band found is shaded; "
            "`python -m text_recognizer.paragraph_ocr PAGE --model RUN --ground-truth FILE` "
            "then reads the lines and reports the CER.",
        ),
        (
            "figure",
            """if not missing(paragraphs):
    from text_recognizer.paragraph_ocr import ink_image, segment_lines

    page = paragraphs / "a01-000u-cropped.jpg"
    if not missing(page):
        ink = ink_image(page)
        bands = segment_lines(ink)
        shaded = np.stack([255 - ink] * 3, axis=-1).astype(np.float32)
        for i, (top, bottom) in enumerate(bands):
            shaded[top:bottom] *= np.array([1.0, 0.85, 0.7] if i % 2 else [0.7, 0.85, 1.0])
        print(f"{len(bands)} lines found in {page.name}")
        plt.figure(figsize=(6, 5))
        plt.imshow(shaded.astype(np.uint8))
        plt.axis("off")
        plt.show()
""",
        ),
    ],
    "04-kaggle-names.ipynb": [
        (
            "markdown",
            "# Kaggle handwritten names\n\nThe real images in "
            "`../shared/data/kaggle_handwriting_names` and what cleaning the labels drops.",
        ),
        ("code", SETUP),
        (
            "code",
            """\
kaggle = SHARED_DATA_DIR / "kaggle_handwriting_names"
have_kaggle = not missing(kaggle / "written_name_test_v2.csv")
if have_kaggle:
    from collections import Counter

    from text_recognizer.datasets.kaggle_names import clean_label, read_csv_rows

    rows = read_csv_rows((kaggle / "written_name_test_v2.csv").read_bytes(), "test csv")
    reasons = Counter(clean_label(label)[1] or "kept" for _, label in rows)
    print(f"{len(rows)} labelled rows in the test CSV; cleaning report:")
    for reason, n in reasons.most_common():
        print(f"  {reason:20s} {n:6d}  ({n / len(rows):.1%})")
""",
        ),
        (
            "figure",
            """\
if have_kaggle:
    from text_recognizer import decoding
    from text_recognizer.datasets.kaggle_names import KaggleNamesDataset

    names = KaggleNamesDataset(data_dir=str(kaggle), split_from_available=0.2).load_or_generate_data()
    print(names.summary())
    show(names.x_train[:8], decoding.label_texts(names.y_train[:8], names.mapping), cols=2, size=1.2,
         aspect=names.x_train.shape[2] / names.x_train.shape[1])
""",
        ),
    ],
    "05-train-then-predict.ipynb": [
        (
            "markdown",
            "# Train, then predict\n\nTrain a tiny character model through the library "
            "API (no W&B), load the saved weights and read a few images.",
        ),
        ("code", SETUP),
        (
            "code",
            """\
import os
import tempfile

os.environ.setdefault("TEXT_RECOGNIZER_RUNS_DIR", tempfile.mkdtemp(prefix="notebook-runs-"))
from text_recognizer.config import validate_config
from text_recognizer.run.runner import run_experiment

config = validate_config({
    "experiment_group": "notebook",
    "dataset": "SyntheticCharactersDataset",
    "dataset_args": {"num_train": 1000, "num_test": 200, "charset": "digits"},
    "model": "CharacterModel",
    "network": "lenet",
    "train_args": {"batch_size": 64, "epochs": 2},
})
code, summary = run_experiment(config, save=True, use_wandb=False)
print("exit", code, " test accuracy", round(summary["test_accuracy"], 3), " run", summary["run_dir"])
""",
        ),
        (
            "figure",
            """\
from pathlib import Path

from text_recognizer.datasets.synthetic_characters import SyntheticCharactersDataset

data = SyntheticCharactersDataset(**config["dataset_args"]).load_or_generate_data()
images, truth = data.x_test[:12], [data.mapping[int(i)] for i in data.y_test[:12]]
try:  # the predictors module, when this checkout has it
    from text_recognizer.predictors import CharacterPredictor

    predictor = CharacterPredictor.from_run(summary["run_dir"])
    results = [(p.text, p.confidence) for p in predictor.predict_batch(list(images))]
except ImportError:
    from text_recognizer.models.base import Model

    model = Model.load(summary["weights"])
    results = [model.predict_on_image(im) for im in images]
show(images, [f"{t} {c:.2f} ({'ok' if t == y else 'true ' + y})" for (t, c), y in zip(results, truth)], cols=6)
""",
        ),
        (
            "markdown",
            "The run folder also holds the plots written at the end of the run (writing them "
            "leaves this notebook's inline backend as it was, so figures still show).",
        ),
        (
            "figure",
            """\
from IPython.display import Image, display

run_dir = Path(summary["run_dir"])
for name in ("predictions.png", "confusion_matrix.png", "curves.png"):
    if (run_dir / name).exists():
        print(name)
        display(Image(filename=str(run_dir / name)))
    else:
        print("no", name)
""",
        ),
        (
            "markdown",
            "`compare_runs` draws its curves as a matplotlib `Figure`, which shows inline too.",
        ),
        (
            "figure",
            """\
from text_recognizer.orchestration.compare import curves_figure, load_run

curves_figure([load_run(run_dir)], title=run_dir.name)
""",
        ),
    ],
}


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata = {
        "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
        "language_info": {"name": "python"},
    }
    make = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell}
    nb.cells = []
    for kind, source in cells:
        if kind == FIGURE:
            cell = nbformat.v4.new_code_cell(source.rstrip("\n"))
            cell.metadata["tags"] = [FIGURE]
        else:
            cell = make[kind](source.rstrip("\n"))
        nb.cells.append(cell)
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i}"  # stable ids: regenerating gives identical files
    return nb


def render(name: str) -> str:
    return nbformat.writes(build(NOTEBOOKS[name])) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write every notebook; ``--check`` only reports files that differ (exit 1)."""
    check = "--check" in (argv if argv is not None else sys.argv[1:])
    stale = []
    for name in NOTEBOOKS:
        path, text = HERE / name, render(name)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    for name in stale:
        print(f"{name} differs from make_notebooks.py; run python notebooks/make_notebooks.py")
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
