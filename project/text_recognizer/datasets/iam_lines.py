"""IAM handwritten text lines (Marti & Bunke 2002), in the writer-independent Aachen/RWTH split.

Three raw layouts are read (``data_dir``, default ``data/raw/iam/``), in this order of preference
when several are present (``source`` = ``auto``; ``official``, ``fsdl`` or ``parquet`` insists on
one):

- **official** (FKI site, after registering): ``ascii/lines.txt`` and
  ``lines/<a01>/<a01-000u>/<a01-000u-00>.png``. ``lines.txt`` rows are
  ``id ok|err graylevel components x y w h word|word|...``; a word may itself hold a space
  (``M Ps``), so the transcription is everything after the 8th field, ``|`` -> space.
- **FSDL's iamdb.zip** (downloaded per ``data/raw/iam/metadata.toml``; read in place, or its
  extracted ``xml/`` + ``forms/``): full forms plus the official XML. Each line is cropped from its
  form: the union of the line's ``word/cmp`` component boxes, padded by ``LINE_PADDING``
  full-resolution pixels. FSDL's forms are JPEGs resized to half size, so XML coordinates are
  scaled by the form image's width over the XML form ``width`` when the XML states it, else by 0.5
  for a ``.jpg`` form (FSDL's) and 1.0 for a ``.png`` (official full-resolution forms). The label
  is the line's word texts joined by spaces, which is exactly the ``lines.txt`` transcription, so
  both layouts give the same labels (IAM's tokenisation: ``tomorrow .``, ``M Ps``).
- **parquet**: Teklia's Hugging Face copy (``train/validation/test.parquet``, no IAM account
  needed; see datasets/iam_parquet.py). Its rows have no line ids, so its split is Teklia's
  (the Aachen split's line counts) and not checked against the lists; ``skip_err`` has no flag
  to read there; the paragraph-benchmark lines are recognised by text (below).

With nothing in the default folder, iamdb.zip is downloaded; if that fails and metadata.toml
lists the parquet files, they are downloaded instead (saying so).

Splits: the Aachen/RWTH form lists used in the literature (``train.uttlist`` 747 forms,
``validation.uttlist`` 116, ``test.uttlist`` 336; writer-disjoint), fetched with sha256 from
georgeretsi/HTR-best-practices, or taken from ``data_dir`` when placed there. Lines of forms in
none of the lists are not used (counted in the summary). Validation is the official validation
list (``official_validation``, default); with it off, those lines join train and validation is the
usual seeded carve. Test is kept for the final evaluation. The forms of the shared IAM paragraph
crops (``PARAGRAPH_BENCHMARK_FORMS``, in the train list) are left out of train and validation,
counted as ``paragraph_benchmark_form``, so paragraph OCR is measured on unseen text. The parquet
rows have no form ids: train and validation lines whose text (whitespace ignored) is a line of those
forms in ``lines.txt`` (``data_dir``'s, else ``../shared/data/iam``'s, where the benchmark lives)
are left out instead, counted as ``paragraph_benchmark_text``; without a lines.txt nothing can be
matched and a warning says so (the lines.txt is one of the raw files the cache is checked against,
so one placed later rebuilds it).

Images: grayscale, inverted to white ink on black (like EMNIST), resized to ``image_height``
keeping the aspect ratio, left-aligned and zero-padded to ``image_width``. A line that would be
wider is squeezed horizontally to fit rather than cropped, since cropping would cut off text the
label still holds (counted as ``squeezed``). Lines with more than ``max_length`` characters,
missing or undecodable images, or (with ``skip_err``) IAM's ``err`` segmentation flag are skipped
and counted with examples in ``skipped`` and the summary.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from text_recognizer import paths, progress
from text_recognizer.datasets.base import Dataset, summary_main
from text_recognizer.datasets.files import FileTree, read_image_bytes
from text_recognizer.datasets.iam_parquet import (
    PARQUET_FILES,
    iter_rows,
    parquet_folder,
    squash,
)
from text_recognizer.datasets.text import encode, make_mapping
from text_recognizer.errors import ConfigError, DataError
from text_recognizer.fileio import read_small_text

RAW_NAME = "iam"  # data/raw/iam/ holds metadata.toml, iamdb.zip and the split lists
ARCHIVE = "iamdb.zip"
LINES_TXT = "ascii/lines.txt"
SPLIT_FILES = {"train": "train.uttlist", "validation": "validation.uttlist", "test": "test.uttlist"}
# The forms of the IAM paragraph crops in ../shared/data (the paragraph-OCR benchmark, and FSDL's
# test images), as 7-character stems: a01-000u and a01-000x are one text by two writers. They sit
# in the Aachen train list; their lines never enter train or validation, so the benchmark stays a
# test (lm.py leaves their text out of the language model too).
PARAGRAPH_BENCHMARK_FORMS = ("a01-000", "a01-077", "a01-087", "a01-107", "a02-046")
LINE_PADDING = 16  # full-resolution pixels around a line's component boxes (8 on FSDL's forms)
FSDL_FORM_SCALE = 0.5
# Read limits (a zip member can inflate to anything): IAM's forms are 1-4 MB, their XML 30 KB.
MAX_IMAGE_BYTES = 64 << 20
MAX_XML_BYTES = 16 << 20
# The official ascii/lines.txt is 1.4 MB and a split list 6 KB; a file far larger is not one (and
# is refused before it is read, whatever it is: a sparse file, a FIFO, a device).
MAX_LINES_TXT_BYTES = 256 << 20
MAX_SPLIT_LIST_BYTES = 16 << 20
# Every character of the 13,353 official transcriptions, so the mapping never depends on which
# lines a copy happens to hold.
SOURCES = ("auto", "official", "fsdl", "parquet")  # auto: the first present, in this order
IAM_CHARACTERS = " !\"#&'()*+,-./0123456789:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class IamLine:
    """One row of ``ascii/lines.txt`` (or one XML line): id, segmentation flag, box, text."""

    id: str
    ok: bool
    graylevel: int
    components: int
    box: tuple[int, int, int, int]  # x, y, w, h in full-resolution form pixels
    text: str

    @property
    def form_id(self) -> str:
        return form_of(self.id)

    @property
    def image_path(self) -> str:
        """``lines/a01/a01-000u/a01-000u-00.png`` in the official layout."""
        return f"lines/{self.id.split('-')[0]}/{self.form_id}/{self.id}.png"


def form_of(line_id: str) -> str:
    """``a01-000u-00`` -> ``a01-000u``."""
    return line_id.rsplit("-", 1)[0]


def parse_lines_txt(text: str, where: str = "lines.txt") -> list[IamLine]:
    """Parse IAM's ``ascii/lines.txt``; a malformed row is a DataError naming its line number."""
    lines = []
    for number, row in enumerate(text.splitlines(), 1):
        if not row.strip() or row.startswith("#"):
            continue
        parts = row.split(" ", 8)
        try:
            if len(parts) != 9 or parts[1] not in ("ok", "err"):
                raise ValueError
            x, y, w, h = (int(v) for v in parts[4:8])
            gray, count = int(parts[2]), int(parts[3])
        except ValueError:
            raise DataError(
                f"{where}:{number}: expected 'id ok|err gray n x y w h words', got {row[:60]!r}"
            ) from None
        text = parts[8].replace("|", " ")
        lines.append(IamLine(parts[0], parts[1] == "ok", gray, count, (x, y, w, h), text))
    return lines


def read_lines_txt(path: Path) -> str:
    """The text of ``ascii/lines.txt`` (IAM's is 1.4 MB): bounded, regular files only, never
    blocking on a FIFO. Bytes that are not UTF-8 become U+FFFD (their lines are then skipped as
    holding characters outside the mapping), as IAM's own file is ASCII."""
    from text_recognizer.fileio import read_small_bytes

    data = read_small_bytes(path, MAX_LINES_TXT_BYTES, "transcriptions file", DataError)
    return data.decode("utf-8", errors="replace")


def read_split_lists(folder: Path) -> dict[str, str]:
    """Form id -> split name from the three ``.uttlist`` files; a form listed twice is an error."""
    split_of: dict[str, str] = {}
    for split, filename in SPLIT_FILES.items():
        path = folder / filename
        ids = read_small_text(path, MAX_SPLIT_LIST_BYTES, "split list", DataError).split()
        for form_id in ids:
            if not re.fullmatch(r"[a-z]\d\d-\d{3}[a-z]?", form_id):
                raise DataError(f"{path}: {form_id[:40]!r} is not an IAM form id like a01-000u")
            if split_of.setdefault(form_id, split) != split:
                raise DataError(f"form {form_id} is in both {split_of[form_id]} and {split} lists")
    return split_of


def parse_form_xml(data: bytes, where: str) -> tuple[int | None, list[IamLine]]:
    """An IAM form XML: its stated width (if any) and its handwritten lines with component boxes."""
    try:
        root = ElementTree.fromstring(data)
    except ElementTree.ParseError as e:
        raise DataError(f"{where} is not well-formed XML ({e})") from None
    width = root.attrib.get("width")
    lines = []
    try:
        for el in root.iterfind("handwritten-part/line"):
            lines.append(_xml_line(el))
    except ValueError as e:
        raise DataError(
            f"{where}: a line has a non-integer coordinate or threshold ({e})"
        ) from None
    return (int(width) if width and width.isdecimal() and len(width) < 10 else None), lines


def _xml_line(el: ElementTree.Element) -> IamLine:
    """One ``handwritten-part/line`` element: its words' text and the union of its boxes."""
    boxes = [
        (
            int(c.get("x", 0)),
            int(c.get("y", 0)),
            int(c.get("width", 0)),
            int(c.get("height", 0)),
        )
        for c in el.iterfind("word/cmp")
    ]
    words = [w.get("text", "") for w in el.iterfind("word")]
    text = " ".join(words).replace("&quot;", '"').replace("&amp;", "&")
    if boxes:
        x0 = min(b[0] for b in boxes)
        y0 = min(b[1] for b in boxes)
        x1 = max(b[0] + b[2] for b in boxes)
        y1 = max(b[1] + b[3] for b in boxes)
        box = (x0, y0, x1 - x0, y1 - y0)
    else:
        box = (0, 0, 0, 0)
    ok = el.get("segmentation", "ok") == "ok"
    return IamLine(el.get("id", ""), ok, int(el.get("threshold", 0) or 0), 0, box, text)


def fit_line(image: Any, height: int, width: int) -> tuple[np.ndarray, bool]:
    """Dark-on-light PIL image -> ``(height, width)`` uint8 white ink on black, left-aligned.

    Keeps the aspect ratio; a line that would be wider than ``width`` is squeezed to fit (True).
    The predictors call the same ``preprocess_image`` with ``config()["preprocessing"]``.
    """
    from text_recognizer.preprocessing import preprocess_image

    squeezed = round(image.width * height / max(image.height, 1)) > width
    spec = {"resize": "fit_height", "height": height, "width": width}
    return preprocess_image(image, spec, polarity="dark"), squeezed


class IamLinesDataset(Dataset):
    """IAM lines as ``(image_height, image_width)`` uint8 and ``(N, max_length)`` labels."""

    name = "iam_lines"
    kind = "lines"
    shaping_args: ClassVar[tuple[str, ...]] = (
        "image_height",
        "image_width",
        "max_length",
        "skip_err",
    )
    extra_keys: ClassVar[tuple[str, ...]] = ("trainval_is_validation",)
    needs_download = False  # prepare_raw_data fetches only the files the layout lacks

    def __init__(
        self,
        image_height: int = 28,
        image_width: int = 952,
        max_length: int = 96,
        skip_err: bool = False,
        official_validation: bool = True,
        source: str = "auto",
        data_dir: str | None = None,
        **common: Any,
    ) -> None:
        super().__init__(
            data_dir=data_dir,
            image_height=int(image_height),
            image_width=int(image_width),
            max_length=int(max_length),
            skip_err=bool(skip_err),
            **common,
        )
        if data_dir is None:
            self.data_dir = paths.raw_dir(RAW_NAME)
        self.official_validation = bool(official_validation)
        if source not in SOURCES:
            raise ConfigError(f"IamLinesDataset source {source!r} is not one of {SOURCES}")
        self.source = source

    @property
    def metadata_path(self) -> Path:
        return paths.metadata_path(RAW_NAME)

    # ----- raw data -----------------------------------------------------------------------------
    def present_layouts(self) -> list[str]:
        """The layouts ``data_dir`` holds, in the order ``auto`` prefers them."""
        d, found = self.data_dir, []
        if (d / LINES_TXT).is_file() and (d / "lines").is_dir():
            found.append("official")
        if (d / ARCHIVE).is_file() or self._fsdl_folder() is not None:
            found.append("fsdl")
        if parquet_folder(d) is not None:
            found.append("parquet")
        return found

    def layout(self) -> str | None:
        """``official``, ``fsdl`` (iamdb.zip or its extracted xml/ + forms/), ``parquet``
        (Teklia's copy) or None: the first present, or the one ``source`` names if present."""
        found = self.present_layouts()
        if self.source != "auto":
            return self.source if self.source in found else None
        return found[0] if found else None

    def _benchmark_lines_txt(self) -> Path | None:
        """The lines.txt that says which texts the paragraph-benchmark forms hold (parquet only)."""
        for path in (self.data_dir / LINES_TXT, paths.SHARED_DATA_DIR / RAW_NAME / LINES_TXT):
            if path.is_file():
                return path
        return None

    def _fsdl_folder(self) -> Path | None:
        for root in (self.data_dir / "iamdb", self.data_dir):
            if (root / "xml").is_dir() and (root / "forms").is_dir():
                return root
        return None

    def split_lists_dir(self) -> Path | None:
        for folder in (self.data_dir, self.data_dir / "splits", paths.raw_dir(RAW_NAME)):
            if all((folder / f).is_file() for f in SPLIT_FILES.values()):
                return folder
        return None

    def extra_sources(self) -> list[str]:
        """The benchmark forms left out: caches made before that rule are other caches. A chosen
        source is another cache too (``auto`` keeps the names caches had before sources)."""
        chosen = [] if self.source == "auto" else [f"source={self.source}"]
        return [f"without={','.join(PARAGRAPH_BENCHMARK_FORMS)}", *chosen]

    def raw_files(self) -> list[Path]:
        """The split lists and the layout's transcriptions and images: they key the cache. For
        the parquet, its three files and the lines.txt the benchmark texts come from."""
        folder = parquet_folder(self.data_dir)
        if self.layout() == "parquet" and folder is not None:
            files = [folder / name for name in PARQUET_FILES.values()]
            lines_txt = self._benchmark_lines_txt()
            return files + ([lines_txt] if lines_txt else [])
        lists = self.split_lists_dir()
        files = [lists / f for f in SPLIT_FILES.values()] if lists else []
        fsdl = self._fsdl_folder()
        if self.layout() == "official":
            files += [self.data_dir / LINES_TXT, self.data_dir / "lines"]
        elif fsdl is not None:
            files += [fsdl / "xml", fsdl / "forms"]
        else:
            files.append(self.data_dir / ARCHIVE)
        return files

    def _wanted_layout(self) -> str:
        """The layout to read: the present one, else the one ``source`` names (auto: FSDL's)."""
        return self.layout() or ("fsdl" if self.source == "auto" else self.source)

    def missing_files(self) -> list[str]:
        missing = []
        if self.layout() is None:
            missing.append(
                f"{LINES_TXT} + lines/ (official), {ARCHIVE} (FSDL) or "
                f"{', '.join(PARQUET_FILES.values())} (Teklia)"
            )
        if self._wanted_layout() != "parquet" and self.split_lists_dir() is None:
            missing.append(", ".join(SPLIT_FILES.values()))
        return missing

    def prepare_raw_data(self) -> None:
        """Trust a user's layout; download iamdb.zip (no layout) and the split lists if absent.

        Every missing file is tried before any error, so one error names them all (offline:
        each file, its URL and the folder it goes in)."""
        from text_recognizer.datasets.download import ensure_downloaded, merge_data_errors

        problems: list[DataError] = []
        wanted = []
        if self.layout() is None:
            if self.user_data_dir or self.source == "official":
                problems.append(DataError(self._no_layout_message()))
            elif self.source == "parquet":
                wanted.extend(PARQUET_FILES.values())
            else:
                wanted.append(ARCHIVE)
        if self._wanted_layout() != "parquet" and self.split_lists_dir() is None:
            wanted.extend(SPLIT_FILES.values())
        dest = paths.raw_dir(RAW_NAME)
        wanted = [name for name in wanted if not (dest / name).is_file()]
        if wanted:
            try:
                ensure_downloaded(self.metadata_path, dest, only=wanted)
            except DataError as e:
                problems.append(e)
        if problems and self.layout() is None and self.source == "auto" and not self.user_data_dir:
            problems = self._fall_back_to_parquet(dest, problems)
        failed = merge_data_errors(problems)
        if failed is not None:
            raise failed

    def _no_layout_message(self) -> str:
        has_txt = (self.data_dir / LINES_TXT).is_file()
        hint = f"has {LINES_TXT} but no lines/ folder" if has_txt else "has neither"
        if self.source != "auto":
            hint = f"has no {self.source} layout (source={self.source!r}); it {hint}"
        return (
            f"data_dir {self.data_dir} {hint}: IamLinesDataset needs the official "
            f"layout ({LINES_TXT} + lines/<a01>/<a01-000u>/<a01-000u-00>.png), "
            f"FSDL's {ARCHIVE} (or its extracted xml/ and forms/) or Teklia's "
            f"{', '.join(PARQUET_FILES.values())} (in it or its data/ folder)"
        )

    def _fall_back_to_parquet(self, dest: Path, problems: list[DataError]) -> list[DataError]:
        """iamdb.zip could not be had: download Teklia's parquet copy when metadata.toml lists
        it. The problems left: none once it is here, else the zip's and the parquet's."""
        from text_recognizer.datasets.download import ensure_downloaded
        from text_recognizer.datasets.metadata import load_metadata

        listed = {remote.filename for remote in load_metadata(self.metadata_path)}
        names = [name for name in PARQUET_FILES.values() if name in listed]
        if len(names) < len(PARQUET_FILES):
            return problems
        progress.line(
            f"warning: {ARCHIVE} could not be downloaded; downloading Teklia's IAM-line parquet "
            "copy instead (Teklia's split, not checked against the Aachen lists; README, IAM)"
        )
        try:
            ensure_downloaded(self.metadata_path, dest, only=names)
        except DataError as e:
            return [*problems, e]
        return [] if self.layout() == "parquet" else problems

    # ----- processing ----------------------------------------------------------------------------
    def process(self) -> tuple[dict[str, np.ndarray], list[str]]:
        layout = self.layout()
        lists_dir = self.split_lists_dir()
        benchmark: frozenset[str] = frozenset()
        if layout == "parquet":  # the files are the split; the benchmark is known by its text
            split_of: dict[str, str] = {}
            benchmark = self._benchmark_texts()
        elif lists_dir is None:
            raise DataError(f"no {', '.join(SPLIT_FILES.values())} in {self.data_dir}")
        else:
            split_of = read_split_lists(lists_dir)
        mapping = make_mapping(IAM_CHARACTERS)
        items: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {
            "train": [],
            "validation": [],
            "test": [],
        }

        def keep(line: IamLine, given: str | None = None) -> str | None:
            """The line's split, or None (counted) when it is not used. ``given``: the parquet
            file's split (its rows have no form id)."""
            split = given or split_of.get(line.form_id)
            if split is None:
                self.note_skip("form_not_in_split_lists", line.id)
            elif (
                given is None and split != "test" and line.form_id[:7] in PARAGRAPH_BENCHMARK_FORMS
            ):
                self.note_skip("paragraph_benchmark_form", line.id)
            elif given is not None and split != "test" and squash(line.text) in benchmark:
                self.note_skip("paragraph_benchmark_text", line.id)
            elif self.args["skip_err"] and not line.ok:
                self.note_skip("err_segmentation", line.id)
            elif len(line.text) > self.args["max_length"]:
                self.note_skip("longer_than_max_length", f"{line.id} ({len(line.text)})")
            elif not line.text.strip():
                self.note_skip("empty_text", line.id)
            elif set(line.text) - set(IAM_CHARACTERS):
                self.note_skip("characters_outside_mapping", line.id)
            else:
                return split
            return None

        def add(split: str, line: IamLine, image: Any) -> None:
            h, w = self.args["image_height"], self.args["image_width"]
            array, squeezed = fit_line(image, h, w)
            if squeezed:
                self.note_skip("squeezed", line.id)  # kept: counted for information only
            label = encode(line.text, mapping, self.args["max_length"])
            items[split].append((array, label))

        if layout == "official":
            self._read_official(keep, add)
        elif layout == "parquet":
            self._read_parquet(keep, add)
        else:
            self._read_fsdl(keep, add)
        squeezed = self.skipped.pop("squeezed", 0)
        examples = self.skipped_examples.pop("squeezed", [])
        if squeezed:  # not a skip: reported apart so the skip total stays honest
            self.skipped["kept_but_squeezed"] = squeezed
            self.skipped_examples["kept_but_squeezed"] = examples
        return self._assemble(items), mapping

    def _read_official(self, keep: Any, add: Any) -> None:
        where = self.data_dir / LINES_TXT
        lines = parse_lines_txt(read_lines_txt(where), str(where))
        with progress.bar(len(lines), "IAM lines", unit="line") as bar:
            for line in lines:
                bar.update(1)
                split = keep(line)
                if split is None:
                    continue
                path = self.data_dir / line.image_path
                if not path.is_file():
                    self.note_skip("missing_image", line.image_path)
                    continue
                try:
                    if path.stat().st_size > MAX_IMAGE_BYTES:
                        raise OSError(f"over {MAX_IMAGE_BYTES:,} bytes")
                    image = read_image_bytes(path.read_bytes())
                except Exception as e:  # any undecodable file is a counted skip, never a crash
                    self.note_skip("undecodable_image", f"{line.image_path} ({type(e).__name__})")
                    continue
                add(split, line, image)
        self._warn_skips()

    def _benchmark_texts(self) -> frozenset[str]:
        """The paragraph-benchmark lines' texts (whitespace removed), from a lines.txt."""
        lines_txt = self._benchmark_lines_txt()
        texts: frozenset[str] = frozenset()
        if lines_txt is not None:
            lines = parse_lines_txt(read_lines_txt(lines_txt), str(lines_txt))
            texts = frozenset(
                squash(line.text) for line in lines if line.form_id[:7] in PARAGRAPH_BENCHMARK_FORMS
            )
        if not texts:
            where = lines_txt or f"{self.data_dir} or {paths.SHARED_DATA_DIR / RAW_NAME}"
            progress.line(
                f"warning: IAM parquet: no paragraph-benchmark lines in {LINES_TXT} ({where}), so "
                f"those of {', '.join(PARAGRAPH_BENCHMARK_FORMS)} cannot be told apart and stay in "
                "train and validation"
            )
        return texts

    def _read_parquet(self, keep: Any, add: Any) -> None:
        """Teklia's three files, row by row: an image that does not decode is a counted skip."""
        folder = parquet_folder(self.data_dir)
        assert folder is not None  # layout() said parquet
        for split, name in PARQUET_FILES.items():
            with progress.bar(None, f"IAM {name}", unit="line") as bar:
                for row, data, text in iter_rows(folder / name):
                    bar.update(1)
                    line = IamLine(f"{name}:{row}", True, 0, 0, (0, 0, 0, 0), text or "")
                    if keep(line, split) is None:
                        continue
                    try:
                        if data is None:
                            raise ValueError("no image bytes")
                        if len(data) > MAX_IMAGE_BYTES:
                            raise OSError(f"over {MAX_IMAGE_BYTES:,} bytes")
                        image = read_image_bytes(data)
                    except Exception as e:  # a bad row is a counted skip, never a crash
                        self.note_skip("undecodable_image", f"{line.id} ({type(e).__name__})")
                        continue
                    add(split, line, image)
        self._warn_skips()

    def _read_fsdl(self, keep: Any, add: Any) -> None:
        folder = self._fsdl_folder()
        tree = FileTree(self.data_dir / ARCHIVE) if folder is None else FileTree(folder)
        try:
            if tree.is_zip:  # the archive's root folder (FSDL's is iamdb/)
                xmls = [n for n in tree.all_files() if re.search(r"(^|/)xml/[^/]+\.xml$", n)]
                if not xmls:
                    raise DataError(f"{tree.where()} has no xml/<form>.xml members")
                tree = tree.sub(xmls[0].rsplit("xml/", 1)[0])
            forms = tree.list_dir("forms")
            xml_names = sorted(n for n in tree.list_dir("xml") if n.endswith(".xml"))
            with progress.bar(len(xml_names), "IAM forms", unit="form") as bar:
                for name in xml_names:
                    bar.update(1)
                    self._crop_form(tree, name, forms, keep, add)
        finally:
            tree.close()
        self._warn_skips()

    def _crop_form(self, tree: FileTree, name: str, forms: set[str], keep: Any, add: Any) -> None:
        form_id = name[: -len(".xml")]
        try:
            data = tree.read_bytes(f"xml/{name}", MAX_XML_BYTES)
        except OSError as e:
            raise DataError(f"cannot read {tree.where(f'xml/{name}')}: {e}") from None
        form_width, lines = parse_form_xml(data, tree.where(f"xml/{name}"))
        wanted = [(line, keep(line)) for line in lines]
        wanted = [(line, split) for line, split in wanted if split is not None]
        if not wanted:
            return
        image_name = next(
            (f"{form_id}{ext}" for ext in (".jpg", ".png") if f"{form_id}{ext}" in forms), None
        )
        if image_name is None:
            self.note_skip("missing_image", f"forms/{form_id}.jpg", len(wanted))
            return
        try:
            form = read_image_bytes(tree.read_bytes(f"forms/{image_name}", MAX_IMAGE_BYTES))
            form = form.convert("L")
        except Exception as e:
            self.note_skip(
                "undecodable_image", f"forms/{image_name} ({type(e).__name__})", len(wanted)
            )
            return
        if form_width:
            scale = form.width / form_width
        else:
            scale = FSDL_FORM_SCALE if image_name.endswith(".jpg") else 1.0
        for line, split in wanted:
            x, y, w, h = line.box
            if w <= 0 or h <= 0:
                self.note_skip("no_component_boxes", line.id)
                continue
            pad = LINE_PADDING
            box = (
                max(0, int((x - pad) * scale)),
                max(0, int((y - pad) * scale)),
                min(form.width, int(np.ceil((x + w + pad) * scale))),
                min(form.height, int(np.ceil((y + h + pad) * scale))),
            )
            if box[2] <= box[0] or box[3] <= box[1]:
                self.note_skip("box_outside_form", line.id)
                continue
            add(split, line, form.crop(box))

    def _warn_skips(self) -> None:
        bad = {k: v for k, v in self.skipped.items() if k in ("missing_image", "undecodable_image")}
        for reason, count in bad.items():
            examples = ", ".join(self.skipped_examples.get(reason, [])[:3])
            progress.line(f"warning: IAM: {count} line(s) skipped, {reason} (e.g. {examples})")

    def _assemble(
        self, items: dict[str, list[tuple[np.ndarray, np.ndarray]]]
    ) -> dict[str, np.ndarray]:
        h, w, length = self.args["image_height"], self.args["image_width"], self.args["max_length"]

        def stack(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
            if not pairs:
                return np.zeros((0, h, w), np.uint8), np.zeros((0, length), np.int64)
            return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

        x_train, y_train = stack(items["train"])
        x_val, y_val = stack(items["validation"])
        x_test, y_test = stack(items["test"])
        if len(x_train) + len(x_val) == 0:
            raise DataError(
                f"no usable IAM line in {self.data_dir} belongs to the train or validation lists "
                f"(skipped: {self.skipped})"
            )
        return {
            "x_trainval": np.concatenate([x_train, x_val]),
            "y_trainval": np.concatenate([y_train, y_val]),
            "trainval_is_validation": np.r_[
                np.zeros(len(x_train), bool), np.ones(len(x_val), bool)
            ],
            "x_test": x_test,
            "y_test": y_test,
        }


if __name__ == "__main__":
    raise SystemExit(summary_main("IamLinesDataset"))
