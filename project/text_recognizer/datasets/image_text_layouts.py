"""Reading the folder layouts of `image_text.ImageTextDataset`: which one it is, and its items.

Each layout pairs every transcript whose image is there with it, in an `item_store.ItemStore`;
the rest is counted through ``note_skip`` (an image without transcript, a transcript without
image), never fatal. What cannot be read as the layout at all (a CSV row with one column, a
``gt.txt`` line without the space after its id, an empty folder) is a one-line `DataError` naming
the file and line, as guessing would train on wrong labels.

`decode_images` then decodes the items' images, in this process or on a pool of processes, into
the rows of one preallocated array.
"""

from __future__ import annotations

import csv
import io
import os
import posixpath
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from text_recognizer.datasets.item_store import AMBIGUOUS, ItemStore
from text_recognizer.errors import DataError
from text_recognizer.fileio import read_small_text, walk_files

FORMATS = ("auto", "csv", "sidecar", "pylaia")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".ppm", ".pgm")
SIDECAR = ".gt.txt"
PYLAIA_GT = "gt.txt"
# Header names (lower case) of the filename and transcript columns, Kaggle's FILENAME,IDENTITY too.
FILE_COLUMNS = ("filename", "file", "file_name", "image", "image_path", "path", "id", "img")
TEXT_COLUMNS = ("text", "transcript", "transcription", "label", "identity", "gt", "ground_truth")
# Read limits: a transcript file of a million lines is ~50 MB; one sidecar is one line.
MAX_LABELS_BYTES = 256 << 20
MAX_SIDECAR_BYTES = 1 << 20
MAX_LIST_BYTES = 64 << 20
LAYOUTS_HELP = (
    "expected a CSV/TSV of filename,text, x.gt.txt beside each x.png (kraken), or gt.txt of "
    "'id transcript' lines beside the images (PyLaia)"
)

NoteSkip = Callable[..., None]
# Decoding: folders of fewer images are decoded in-process (a pool's start-up would dominate);
# a task is up to CHUNK_ROWS images and CHUNK_BYTES of output, 2 tasks per worker in flight.
POOL_MIN_IMAGES = 512
CHUNK_ROWS = 256
CHUNK_BYTES = 8 << 20


def clean_text(raw: str) -> str:
    """Line ends become spaces and the ends are stripped; inner spaces are the writer's."""
    return " ".join(part.strip("\r") for part in raw.strip().split("\n"))


def list_images(folder: Path) -> Iterator[str]:
    """The posix path under the folder of every image in it, sorted (streamed: `walk_files`)."""
    for rel, _ in walk_files(folder):
        if posixpath.splitext(rel)[1].lower() in IMAGE_SUFFIXES:
            yield rel


def detect_format(folder: Path, fmt: str, labels_file: Path | None) -> tuple[str, Path | None]:
    """(format, its transcript file; None for sidecars). A folder with nothing to read is a
    DataError saying what was looked for."""
    if not folder.is_dir():
        raise DataError(f"data_dir {folder} is not a folder")
    if not any(p.is_file() for p in folder.rglob("*")):
        raise DataError(f"data_dir {folder} is empty; {LAYOUTS_HELP}")
    if labels_file is not None:
        if not labels_file.is_file():
            raise DataError(f"labels_file {labels_file} is not a file")
        if fmt == "auto":
            fmt = "csv" if labels_file.suffix.lower() in (".csv", ".tsv") else "pylaia"
        if fmt == "sidecar":
            raise DataError("labels_file is for the csv and pylaia formats; sidecars need none")
        return fmt, labels_file
    tables = sorted(
        p for p in folder.iterdir() if p.suffix.lower() in (".csv", ".tsv") and p.is_file()
    )
    gt = folder / PYLAIA_GT
    if fmt == "auto":
        if gt.is_file():
            fmt = "pylaia"
        elif tables:
            fmt = "csv"
        elif any(folder.rglob(f"*{SIDECAR}")):
            fmt = "sidecar"
        else:
            raise DataError(f"no transcripts found in {folder}; {LAYOUTS_HELP}")
    if fmt == "pylaia":
        if not gt.is_file():
            raise DataError(
                f"{folder} has no {PYLAIA_GT} (format pylaia); name it with labels_file"
            )
        return fmt, gt
    if fmt == "csv":
        if len(tables) != 1:
            names = ", ".join(p.name for p in tables) or "none"
            raise DataError(
                f"{folder} has {len(tables)} CSV/TSV files ({names}); format csv reads one: name "
                "it with labels_file"
            )
        return fmt, tables[0]
    return fmt, None


def read_items(
    folder: Path, fmt: str, where: Path | None, note_skip: NoteSkip, store: ItemStore
) -> None:
    """The items of the folder in its layout, into ``store``; images left without a transcript are
    counted."""
    store.add_images(list_images(folder))
    if fmt == "csv" and where is not None:
        match(read_table(where), store, folder, where, note_skip, by_stem=False)
    elif fmt == "pylaia" and where is not None:
        match(read_id_lines(where), store, folder, where, note_skip, by_stem=True)
    else:
        read_sidecars(store, folder, note_skip)
    for rel in store.images_without_item():
        note_skip("image_without_transcript", rel)


def read_table(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line, filename, text) rows of a CSV or TSV, with a header or not, one at a time (they are
    paired as they come, never all held). A TSV's quotes are literal (transcripts hold them); a
    header-less row with more fields keeps them in the text."""
    text = read_small_text(path, MAX_LABELS_BYTES, "transcript file", DataError, "utf-8-sig")
    first = text.split("\n", 1)[0]
    tab = path.suffix.lower() == ".tsv" or ("\t" in first and "," not in first)
    delimiter = "\t" if tab else ","
    quoting = csv.QUOTE_NONE if tab else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    file_col, text_col, header, first_row = 0, 1, False, True
    line = 0
    try:
        for row in reader:
            start, line = line + 1, reader.line_num
            if not row or not "".join(row).strip():
                continue
            lowered = [c.strip().lower() for c in row]
            if first_row and not header and lowered[0] in FILE_COLUMNS:
                header = True
                file_col = next(i for i, c in enumerate(lowered) if c in FILE_COLUMNS)
                text_col = next((i for i, c in enumerate(lowered) if c in TEXT_COLUMNS), 1)
                continue
            if len(row) < 2 or max(file_col, text_col) >= len(row):
                raise DataError(
                    f"{path}: line {start}: {len(row)} column(s) in {delimiter.join(row)[:60]!r}; "
                    f"each row is filename{delimiter}text"
                )
            value = row[text_col] if header else delimiter.join(row[1:])
            first_row = False
            yield start, row[file_col].strip(), value
    except csv.Error as e:
        raise DataError(f"{path}: line {line + 1}: not a readable CSV row ({e})") from None


def read_id_lines(path: Path) -> Iterator[tuple[int, str, str]]:
    """(line, id, text) of PyLaia's ``gt.txt``, one at a time; ``<space>`` token lists become
    text."""
    text = read_small_text(path, MAX_LABELS_BYTES, "transcript file", DataError, "utf-8-sig")
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.strip().split(None, 1)
        if len(parts) < 2:
            raise DataError(
                f"{path}: line {number}: no space between id and transcript in {line[:60]!r}; "
                "each line is 'id transcript'"
            )
        tokens = parts[1].split()
        if "<space>" in tokens and all(len(t) == 1 or t == "<space>" for t in tokens):
            parts[1] = "".join(" " if t == "<space>" else t for t in tokens)
        yield number, parts[0], parts[1]


def match(
    rows: Iterable[tuple[int, str, str]],
    store: ItemStore,
    folder: Path,
    where: Path,
    note_skip: NoteSkip,
    by_stem: bool,
) -> None:
    """Pair each row with its image: a path under the folder (absolute or not), else a unique file
    name (or stem, with ``by_stem``) anywhere in it. Unmatched, ambiguous or repeated rows are
    counted."""
    for line, name, raw in rows:
        wanted = name.replace("\\", "/").removeprefix("./")
        # strings, not Path objects: pathlib interns each part, a table that grows with the folder
        if posixpath.isabs(wanted) and Path(wanted).is_relative_to(folder):
            wanted = Path(wanted).relative_to(folder).as_posix()
        found = store.find_image(wanted, by_stem)
        label = f"{where.name}:{line}: {name[:60]}"
        if found is None:
            note_skip("transcript_without_image", label)
        elif found == AMBIGUOUS:
            note_skip("ambiguous_image_name", label)
        elif not store.add_item(found, clean_text(raw)):
            note_skip("duplicate_transcript", label)


def read_sidecars(store: ItemStore, folder: Path, note_skip: NoteSkip) -> None:
    """kraken's ``x.png`` + ``x.gt.txt`` pairs (any image suffix); lone sidecars are counted."""
    for rel_gt, _ in walk_files(folder):
        if not rel_gt.endswith(SIDECAR):
            continue
        rel = store.image_with_base(rel_gt[: -len(SIDECAR)])
        if rel is None:
            note_skip("transcript_without_image", rel_gt)
            continue
        try:
            text = read_small_text(
                folder / rel_gt, MAX_SIDECAR_BYTES, "transcript", DataError, "utf-8-sig"
            )
        except DataError as e:
            note_skip("unreadable_transcript", f"{rel_gt} ({str(e)[-60:]})")
            continue
        store.add_item(rel, clean_text(text))


def read_split_list(path: Path) -> list[tuple[int, str]]:
    """(line, entry) of a split list: one id or file name a line (names may hold spaces)."""
    if not path.is_file():
        raise DataError(f"split list {path} is not a file")
    text = read_small_text(path, MAX_LIST_BYTES, "split list", DataError, "utf-8-sig")
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


# ----- decoding the images, in-process or on all cores -----------------------------------------------
OnChunk = Callable[[int, list["str | None"]], None]


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def chunk_rows(height: int, width: int) -> int:
    """Images a task decodes: CHUNK_ROWS, fewer for large images (bounded bytes in flight)."""
    return max(1, min(CHUNK_ROWS, CHUNK_BYTES // max(1, height * width)))


def decode_rows(
    paths: list[str], spec: dict[str, Any], out: np.ndarray, root: str = ""
) -> list[str | None]:
    """Each image (``paths`` under ``root``) through ``preprocess_image`` ("dark" ink) into its
    row of ``out``; per image None, or the name of the exception that made it unreadable (its row
    is left as it was)."""
    from text_recognizer.preprocessing import preprocess_image

    statuses: list[str | None] = []
    for i, path in enumerate(paths):
        try:
            out[i] = preprocess_image(os.path.join(root, path), spec, polarity="dark")
        except Exception as e:  # undecodable, truncated, too large: a counted skip
            statuses.append(type(e).__name__)
            continue
        statuses.append(None)
    return statuses


def decode_chunk(
    paths: list[str], spec: dict[str, Any], root: str = ""
) -> tuple[np.ndarray, list[str | None]]:
    """A worker's task: the rows of ``paths`` (zeros where unreadable) and their statuses."""
    out = np.zeros((len(paths), int(spec["height"]), int(spec["width"])), dtype=np.uint8)
    return out, decode_rows(paths, spec, out, root)


def _worker_start() -> None:
    """Workers leave Ctrl-C to the parent, which stops them (no traceback from each)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def decode_images(
    paths: Sequence[str],
    spec: dict[str, Any],
    out: np.ndarray,
    workers: int,
    on_chunk: OnChunk,
    root: str = "",
) -> None:
    """Decode ``paths`` (under ``root``; any sequence that slices, `item_store.KeptPaths` too)
    into the rows of ``out`` (preallocated, one row each), calling ``on_chunk(start, statuses)``
    for each chunk in order. ``workers`` processes (0: all cores;
    1, or fewer than POOL_MIN_IMAGES images: in this process); the result is the same bit for bit.
    Memory is ``out`` plus a bounded number of chunks in flight, however many images there are."""
    step = chunk_rows(int(spec["height"]), int(spec["width"]))
    starts = range(0, len(paths), step)
    workers = min(workers or default_workers(), len(starts))
    if workers <= 1 or len(paths) < POOL_MIN_IMAGES:
        for start in starts:
            on_chunk(start, decode_rows(paths[start : start + step], spec, out[start:], root))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # forkserver (spawn where there is none): workers never fork a parent holding other threads'
    # locks (torch, tqdm) and import only the decoding code.
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_start)
    finished = False
    try:
        todo = iter(starts)
        pending: deque = deque()

        def submit() -> None:
            start = next(todo, None)
            if start is not None:
                chunk = paths[start : start + step]
                pending.append((start, pool.submit(decode_chunk, chunk, spec, root)))

        for _ in range(2 * workers):
            submit()
        while pending:
            start, future = pending.popleft()
            rows, statuses = future.result()
            out[start : start + len(rows)] = rows
            del rows
            submit()
            on_chunk(start, statuses)
        finished = True
    except BrokenProcessPool:
        raise DataError(
            "an image-decoding worker process died (out of memory or killed); rerun with "
            "dataset_args workers=1 to decode in one process"
        ) from None
    finally:
        _stop(pool, finished)


def _stop(pool: Any, finished: bool) -> None:
    """Shut the pool down; after an error or Ctrl-C its workers are terminated, never left."""
    if finished:
        pool.shutdown(wait=True)
        return
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join(timeout=5)
