"""EmnistLinesDataset: the composer, the Brown reader, digit lines of real MNIST, EMNIST text lines.

EMNIST is a tiny fake ``matlab/emnist-<split>.mat`` in NIST's layout whose glyphs carry their own
index in two pixels, so every glyph of every line can be traced back to its split. MNIST and the
Brown corpus are the real shared copies (tests skip with a reason when they are absent).
"""

from __future__ import annotations

import re
import string
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io

from conftest import run_script
from text_recognizer import paths
from text_recognizer.datasets import DATASETS, line_composer
from text_recognizer.datasets.emnist_lines import EmnistLinesDataset
from text_recognizer.datasets.line_composer import (
    column_bank,
    compose_lines,
    glyph_phases,
    place_glyphs,
    sample_glyph_ids,
    zeroed_pages,
)
from text_recognizer.datasets.line_texts import (
    PhraseSampler,
    detokenize,
    digit_strings,
    read_brown_sentences,
)
from text_recognizer.datasets.text import BLANK_INDEX, PADDING_INDEX, decode
from text_recognizer.errors import ConfigError, DataError

SHARED = paths.SHARED_DATA_DIR
MNIST_DIR, CORPUS_DIR = SHARED / "mnist", SHARED / "corpus"
needs_mnist = pytest.mark.skipif(
    not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason=f"real MNIST sample files not found at {MNIST_DIR}",
)
needs_corpus = pytest.mark.skipif(
    not (CORPUS_DIR / "brown.zip").is_file(), reason=f"Brown corpus not found at {CORPUS_DIR}"
)


def reference_compose(glyphs: np.ndarray, ids: np.ndarray, x: np.ndarray, width: int) -> np.ndarray:
    """The obvious loop: np.maximum of each glyph into its columns."""
    n, _ = ids.shape
    h, wg = glyphs.shape[1:]
    out = np.zeros((n, h, width), dtype=np.uint8)
    for b in range(n):
        for g, x0 in zip(ids[b], x[b], strict=True):
            lo, hi = max(x0, 0), min(x0 + wg, width)
            if g >= 0 and hi > lo:
                out[b, :, lo:hi] = np.maximum(out[b, :, lo:hi], glyphs[g][:, lo - x0 : hi - x0])
    return out


@pytest.mark.parametrize("case", ["fsdl_steps", "jittered", "mixed", "heavy_overlap", "empty"])
def test_composer_matches_the_reference_loop(case: str) -> None:
    rng = np.random.default_rng(3)
    glyphs = rng.integers(0, 256, size=(40, 28, 28), dtype=np.uint8)
    n, length, width = 150, 12, 28 * 12
    ids = rng.integers(-1, 40, size=(n, length))
    ids[rng.random(n) < 0.3, 7:] = -1  # shorter lines
    step = 28 - (rng.uniform(0, 0.33, size=n) * 28).astype(int)
    x = np.arange(length)[None, :] * step[:, None]
    if case in ("jittered", "mixed"):  # proportional spacing, negative starts, past the edge
        jittered = (
            np.maximum.accumulate(x + rng.integers(-9, 9, size=(n, length)) + 30, axis=1) - 40
        )
        x = jittered if case == "jittered" else np.where((np.arange(n) % 2)[:, None], jittered, x)
    elif case == "heavy_overlap":
        x = np.arange(length)[None, :] * rng.integers(1, 6, size=(n, 1)) + rng.integers(0, 3)
    elif case == "empty":
        ids[:] = -1
    expected = reference_compose(glyphs, ids, x, width)
    np.testing.assert_array_equal(compose_lines(glyphs, ids, x, width), expected)
    bank = column_bank(glyphs)
    np.testing.assert_array_equal(compose_lines(bank, ids, x, width, column_major=True), expected)
    with pytest.raises(ValueError, match="non-decreasing"):
        compose_lines(glyphs, ids, x[:, ::-1] + 1, width)


def test_composer_fills_a_given_output_even_a_strided_one() -> None:
    rng = np.random.default_rng(4)
    glyphs = rng.integers(0, 256, size=(12, 28, 28), dtype=np.uint8)
    ids = rng.integers(-1, 12, size=(20, 6))
    x = np.arange(6)[None, :] * rng.integers(15, 29, size=(20, 1))
    expected = reference_compose(glyphs, ids, x, 200)
    out = np.zeros((20, 28, 200), dtype=np.uint8)
    assert compose_lines(glyphs, ids, x, 200, out=out) is out
    np.testing.assert_array_equal(out, expected)
    wider = np.zeros((20, 28, 210), dtype=np.uint8)
    compose_lines(glyphs, ids, x, 200, out=wider[:, :, 5:205])  # not C-contiguous
    np.testing.assert_array_equal(wider[:, :, 5:205], expected)
    assert not wider[:, :, :5].any() and not wider[:, :, 205:].any()


@pytest.mark.parametrize("stack", [1, 2, 3, 6])
def test_place_glyphs_phases_and_overlaps(stack: int) -> None:
    """Glyphs stacked up to ``stack`` deep on a column, default phases and given ones."""
    rng = np.random.default_rng(stack)
    glyphs = rng.integers(0, 256, size=(25, 28, 28), dtype=np.uint8)
    n, length, width = 70, 9, 300
    ids = np.where(rng.random((n, length)) < 0.2, -1, rng.integers(0, 25, size=(n, length)))
    step = rng.integers(-(-28 // stack), 29, size=n)  # ceil(28 / step) <= stack
    x = np.arange(length)[None, :] * step[:, None] + rng.integers(0, 10, size=(n, 1))
    expected = reference_compose(glyphs, ids, x, width)
    line, slot = np.nonzero(ids >= 0)
    out = zeroed_pages((n, 28, width))
    place_glyphs(glyphs, line, ids[line, slot], x[line, slot], out)
    np.testing.assert_array_equal(out, expected)
    phase = glyph_phases(line, x[line, slot], 28, n)
    assert phase.max() < stack
    given = zeroed_pages((n, 28, width))  # fixed steps: slots ceil(28 / step) apart never overlap
    place_glyphs(glyphs, line, ids[line, slot], x[line, slot], given, slot % -(-28 // step[line]))
    np.testing.assert_array_equal(given, expected)


def test_zeroed_pages_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    small = zeroed_pages((3, 28, 40))
    assert small.shape == (3, 28, 40) and small.dtype == np.uint8 and not small.any()
    monkeypatch.setattr(line_composer, "MMAP_BYTES", 1 << 12)  # the kernel-mapped way
    big = zeroed_pages((64, 28, 64))
    assert big.shape == (64, 28, 64) and big.dtype == np.uint8 and big.flags.c_contiguous
    assert big.flags.writeable and not big.any()
    big[5, 3, 2] = 7
    assert big.sum() == 7


@pytest.mark.parametrize("overlap", [(0.0, 0.0), (0.0, 0.33), (0.3, 0.9)])
def test_draw_is_sampled_ids_composed_at_the_drawn_overlap(overlap: tuple[float, float]) -> None:
    """``draw``'s contract, seed for seed: glyph ids, then one overlap per line, then the composer."""
    rng = np.random.default_rng(8)
    images = rng.integers(0, 256, size=(90, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 4, size=90)
    length = 10
    y = rng.integers(2, 7, size=(150, length))  # tokens 2..5: classes 0..3, 6: space
    y[rng.random(150) < 0.3, 6:] = PADDING_INDEX
    lut = np.array([-1, -1, 0, 1, 2, 3, -1])
    ds = EmnistLinesDataset(
        char_source="MnistDataset",
        max_length=length,
        min_overlap=overlap[0],
        max_overlap=overlap[1],
    )
    lines = ds.draw(y, lut, images, labels, np.random.default_rng(11), "test")
    again = np.random.default_rng(11)
    ids = sample_glyph_ids(np.where(y == PADDING_INDEX, -1, lut[y]), labels, again)
    step = 28 - (again.uniform(*overlap, size=len(y)) * 28).astype(np.int64)
    x = np.arange(length)[None, :] * step[:, None]
    np.testing.assert_array_equal(lines, reference_compose(images, ids, x, 28 * length))
    assert lines.dtype == np.uint8 and lines.flags.c_contiguous


def test_digit_strings_and_detokenize() -> None:
    texts = digit_strings(500, 10, np.random.default_rng(0))
    assert all(1 <= len(t) <= 10 and set(t) <= set(string.digits + " ") for t in texts)
    assert all(t[0] != " " and t[-1] != " " and "  " not in t for t in texts)
    assert {len(t) for t in texts} == set(range(1, 11))
    assert detokenize(["``", "No", "''", ",", "he", "said", "(", "twice", ")", "."]) == (
        '"No", he said (twice).'
    )


@needs_corpus
def test_brown_reader_and_phrase_sampler_on_the_real_corpus() -> None:
    sentences = read_brown_sentences(CORPUS_DIR / "brown.zip")
    assert len(sentences) == 57340  # nltk.corpus.brown.sents() has 57,340 sentences
    assert sentences[0].startswith("The Fulton County Grand Jury said Friday an investigation")
    assert sentences[0].endswith('produced "no evidence" that any irregularities took place.')
    assert not any("/nn" in s or "/at " in s for s in sentences)  # tags stripped
    rng = np.random.default_rng(0)
    mixed = PhraseSampler(sentences, string.digits + string.ascii_letters, 20)
    phrases = mixed.sample(400, rng)
    assert all(1 <= len(p) <= 20 for p in phrases)
    assert all(set(p) <= set(string.digits + string.ascii_letters + " ") for p in phrases)
    assert all(p.strip() == p and "  " not in p for p in phrases)
    # Whole words: each phrase sits in the cleaned text between separators.
    for p in phrases[:50]:
        assert re.search(rf"(?<![^ \n]){re.escape(p)}(?![^ \n])", mixed.text), p
    upper = PhraseSampler(sentences[:3000], string.ascii_uppercase, 16).sample(100, rng)
    assert all(set(p) <= set(string.ascii_uppercase + " ") for p in upper)  # case folded


def test_corpus_that_is_not_a_zip_is_named(tmp_path: Path, data_dirs) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "brown.zip").write_text("<html>not here</html>")
    with pytest.raises(DataError, match=r"corpus file .*brown\.zip is not a zip archive") as err:
        read_brown_sentences(folder / "brown.zip")
    assert "\n" not in str(err.value) and "HTML" in str(err.value)
    empty = tmp_path / "empty.zip"
    with zipfile.ZipFile(empty, "w") as zf:
        zf.writestr("brown/README", "no texts")
    with pytest.raises(DataError, match="no Brown text members"):
        read_brown_sentences(empty)
    with pytest.raises(DataError, match=r"has no brown\.zip"):
        EmnistLinesDataset(corpus_dir=str(tmp_path)).load_or_generate_data()
    with pytest.raises(ConfigError, match=r"corpus_dir .* and data_dir .* differ"):
        EmnistLinesDataset(corpus_dir=str(folder), data_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="min_overlap <= max_overlap"):
        EmnistLinesDataset(min_overlap=0.5, max_overlap=0.2)


# ----- digit lines of real MNIST ----------------------------------------------------------------


def glyph_bytes(images: np.ndarray) -> set[bytes]:
    return {img.tobytes() for img in images}


@needs_mnist
def test_digit_lines_from_real_mnist(data_dirs, monkeypatch: pytest.MonkeyPatch) -> None:
    args = {
        "char_source": "MnistDataset",
        "char_data_dir": str(MNIST_DIR),
        "mnist_test_set_only": True,
        "max_length": 12,
        "min_overlap": 0.0,
        "max_overlap": 0.0,
        "num_train": 120,
        "num_test": 40,
    }
    ds = EmnistLinesDataset(**args).load_or_generate_data()
    assert ds.mapping == ["<blank>", "<pad>", *string.digits, " "]
    assert ds.x_train.shape[1:] == (28, 336) and ds.x_train.dtype == np.uint8
    assert len(ds.x_train) + len(ds.x_val) == 120 and len(ds.x_test) == 40
    config = ds.config()
    assert config["kind"] == "lines" and config["max_length"] == 12
    assert config["input_shape"] == [28, 336] and config["output_shape"] == [12, 13]
    assert config["blank_index"] == BLANK_INDEX and config["padding_index"] == PADDING_INDEX
    assert not (ds.y_train == BLANK_INDEX).any()

    chars = (
        DATASETS["MnistDataset"]
        .load()(data_dir=str(MNIST_DIR), test_set_only=True, validation_fraction=0.0)
        .load_or_generate_data()
    )
    train_glyphs, test_glyphs = glyph_bytes(chars.x_train), glyph_bytes(chars.x_test)
    assert not train_glyphs & test_glyphs
    for x, y, allowed in (
        (
            np.concatenate([ds.x_train, ds.x_val]),
            np.concatenate([ds.y_train, ds.y_val]),
            train_glyphs,
        ),
        (ds.x_test, ds.y_test, test_glyphs),
    ):
        for image, label in zip(x, y, strict=True):
            text = decode(label, ds.mapping)
            assert 1 <= len(text) <= 12 and set(text) <= set(string.digits + " ")
            for i, ch in enumerate(text):  # no overlap: glyph i fills columns 28i..28i+27
                block = image[:, 28 * i : 28 * i + 28]
                if ch == " ":
                    assert not block.any()
                else:
                    assert block.tobytes() in allowed
            assert not image[:, 28 * len(text) :].any()

    # Cached by its arguments; seeded: rebuilt identically; test lines ignore num_train.
    with monkeypatch.context() as m:
        m.setattr(EmnistLinesDataset, "process", lambda self: pytest.fail("reprocessed"))
        again = EmnistLinesDataset(**args).load_or_generate_data()
    np.testing.assert_array_equal(again.x_test, ds.x_test)
    ds.cache_path.unlink()
    rebuilt = EmnistLinesDataset(**args).load_or_generate_data()
    np.testing.assert_array_equal(rebuilt.x_train, ds.x_train)
    more = EmnistLinesDataset(**{**args, "num_train": 130}).load_or_generate_data()
    assert more.cache_path != ds.cache_path
    np.testing.assert_array_equal(more.x_test, ds.x_test)
    np.testing.assert_array_equal(more.y_test, ds.y_test)


@needs_mnist
def test_overlap_range_and_module_summary(tmp_path: Path) -> None:
    env = {"TEXT_RECOGNIZER_DATA_DIR": str(tmp_path / "data")}
    args = (
        f'{{"char_source": "MnistDataset", "char_data_dir": "{MNIST_DIR}", '
        '"mnist_test_set_only": true, "max_length": 8, "num_train": 50, "num_test": 10, '
        '"min_overlap": 0.2, "max_overlap": 0.4}'
    )
    proc = run_script("-m", "text_recognizer.datasets.emnist_lines", args, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (
        "EmnistLinesDataset (lines)" in proc.stdout
        and "test:       10 x (28, 224) uint8" in proc.stdout
    )
    bad = run_script(
        "-m", "text_recognizer.datasets.emnist_lines", '{"max_overlap": 1.5}', env=env, timeout=120
    )
    assert bad.returncode == 2 and "max_overlap" in bad.stderr and "Traceback" not in bad.stderr


# ----- EMNIST text lines ---------------------------------------------------------------------------


def write_fake_emnist(folder: Path, split: str, per_class: tuple[int, int] = (3, 2)) -> None:
    """``matlab/emnist-<split>.mat`` as NIST writes it; glyph k has k in pixels (0,0),(0,1)."""
    if split == "letters":
        mapping = np.array(
            [[i + 1, ord(u), ord(u.lower())] for i, u in enumerate(string.ascii_uppercase)]
        )
    else:
        chars = string.digits + string.ascii_uppercase + string.ascii_lowercase
        mapping = np.array([[i, ord(c)] for i, c in enumerate(chars)])
    labels = mapping[:, 0]

    def part(count: int, start: int) -> dict[str, np.ndarray]:
        y = np.repeat(labels, count)
        images = np.zeros((len(y), 28, 28), dtype=np.uint8)
        images[:, 6:22, 10:18] = 200
        k = np.arange(start, start + len(y))
        images[:, 0, 0], images[:, 0, 1] = k % 256, k // 256
        rows = images.transpose(0, 2, 1).reshape(len(y), 784)  # stored transposed, as NIST does
        return {"images": rows, "labels": y.reshape(-1, 1), "writers": np.zeros((len(y), 1))}

    dataset = {
        "train": part(per_class[0], 0),
        "test": part(per_class[1], 30000),
        "mapping": mapping,
    }
    (folder / "matlab").mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(folder / "matlab" / f"emnist-{split}.mat", {"dataset": dataset}, format="5")


def small_corpus(folder: Path, members: int = 12) -> Path:
    """A brown.zip holding the first real Brown texts only: the same format, processed fast."""
    folder.mkdir(parents=True, exist_ok=True)
    with (
        zipfile.ZipFile(CORPUS_DIR / "brown.zip") as src,
        zipfile.ZipFile(folder / "brown.zip", "w") as dst,
    ):
        names = [n for n in src.namelist() if re.search(r"/c[a-r]\d\d$", n)][:members]
        for name in [*names, "brown/README"]:
            dst.writestr(name, src.read(name))
    return folder


@needs_corpus
def test_emnist_text_lines_use_brown_text_and_split_glyphs(tmp_path: Path, data_dirs) -> None:
    corpus = small_corpus(tmp_path / "corpus")
    emnist = tmp_path / "emnist"
    write_fake_emnist(emnist, "byclass")
    write_fake_emnist(emnist, "letters")
    common = {
        "char_data_dir": str(emnist),
        "corpus_dir": str(corpus),
        "max_length": 16,
        "min_overlap": 0.0,
        "max_overlap": 0.0,
        "num_train": 60,
        "num_test": 30,
    }
    ds = EmnistLinesDataset(**common).load_or_generate_data()
    alphabet = string.digits + string.ascii_uppercase + string.ascii_lowercase
    assert ds.mapping == ["<blank>", "<pad>", *alphabet, " "]
    assert ds.x_test.shape[1:] == (28, 448)
    texts = [decode(y, ds.mapping) for y in ds.y_test]
    assert any(any(c.islower() for c in t) for t in texts)
    for x, y, test in ((ds.x_train, ds.y_train, False), (ds.x_test, ds.y_test, True)):
        for image, label in zip(x, y, strict=True):
            text = decode(label, ds.mapping)
            assert 1 <= len(text) <= 16 and text == text.strip()
            for i, ch in enumerate(text):
                block = image[:, 28 * i : 28 * i + 28]
                if ch == " ":
                    assert not block.any()
                    continue
                k = int(block[0, 0]) + 256 * int(block[0, 1])  # the glyph's own index
                assert (k >= 30000) == test  # test lines only use test glyphs
                per_class = 2 if test else 3
                assert alphabet[(k - 30000 * test) // per_class] == ch  # the right character
    letters = EmnistLinesDataset(**{**common, "emnist_split": "letters", "max_overlap": 0.5})
    letters.load_or_generate_data()
    assert letters.mapping == ["<blank>", "<pad>", *string.ascii_uppercase, " "]
    upper = [decode(y, letters.mapping) for y in letters.y_train]
    assert all(set(t) <= set(string.ascii_uppercase + " ") for t in upper)  # folded to upper case
    assert letters.cache_path != ds.cache_path


@needs_mnist
def test_taller_lines_are_the_28px_lines_scaled_as_serving_scales_them(data_dirs) -> None:
    """image_height scales the drawn lines, aspect kept; a predictor reading the 28-px line from
    a file (preprocess_image with the dataset's preprocessing) gets exactly the training array."""
    from PIL import Image

    from text_recognizer.preprocessing import preprocess_image

    args = {
        "char_source": "MnistDataset",
        "char_data_dir": str(MNIST_DIR),
        "mnist_test_set_only": True,
        "max_length": 6,
        "num_train": 20,
        "num_test": 8,
    }
    base = EmnistLinesDataset(**args).load_or_generate_data()
    tall = EmnistLinesDataset(**args, image_height=64).load_or_generate_data()
    assert base.x_test.shape[1:] == (28, 168) and tall.x_test.shape[1:] == (64, 384)
    np.testing.assert_array_equal(tall.y_test, base.y_test)  # the same lines, only taller
    assert tall.cache_path != base.cache_path
    pre = tall.config()["preprocessing"]
    assert pre == {"resize": "fit_height", "height": 64, "width": 384}
    for line, expected in zip(base.x_test, tall.x_test, strict=True):
        scaled = np.asarray(Image.fromarray(line).resize((384, 64), Image.BILINEAR))
        np.testing.assert_array_equal(scaled, expected)
        np.testing.assert_array_equal(preprocess_image(line, pre, polarity="light"), expected)
    with pytest.raises(ConfigError, match="image_height"):
        EmnistLinesDataset(**args, image_height=256)


def test_every_line_dataset_takes_lines_128_pixels_high() -> None:
    for name, entry in DATASETS.items():
        if entry.kind == "lines":
            height = entry.args["image_height"]
            assert height.max >= 128, name


def test_taller_lines_that_do_not_fit_in_memory_are_one_line(monkeypatch) -> None:
    from text_recognizer.datasets import emnist_lines

    monkeypatch.setattr(emnist_lines, "available_memory", lambda: 1 << 20)
    lines = np.zeros((100, 28, 280), np.uint8)
    with pytest.raises(DataError, match=r"100 train lines of 128x1280 pixels need .* GiB"):
        emnist_lines.scale_lines(lines, 128, "train")
