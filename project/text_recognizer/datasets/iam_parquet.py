"""IAM lines from Teklia's Hugging Face copy (``Teklia/IAM-line``, MIT licence per its card).

Three files, ``train.parquet``, ``validation.parquet`` and ``test.parquet`` (in ``data_dir`` or
its ``data/`` subfolder), each with an ``image`` column (a struct whose ``bytes`` field holds the
PNG, as Hugging Face ``datasets`` store images, or a plain binary column) and a ``text`` column.
The rows carry no IAM line or form ids, so the split is Teklia's (its viewer's row counts, 6.48k
/ 976 / 2.92k, match the Aachen split's 6,482 / 976 / 2,915 lines; not verifiable here) and the
paragraph-benchmark forms are recognised by their text (`squash`; IamLinesDataset reads those
texts from an IAM ``lines.txt``).

Read with pyarrow batch by batch (a row group at most is in memory), so a 167 MB train file never
has to be decoded whole.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from text_recognizer.errors import DataError, one_line

PARQUET_FILES = {
    "train": "train.parquet",
    "validation": "validation.parquet",
    "test": "test.parquet",
}
BATCH_ROWS = 64  # rows decoded at a time; the reader holds at most one row group's pages


def parquet_folder(data_dir: Path) -> Path | None:
    """``data_dir`` or ``data_dir/data`` when it holds all three split files, else None."""
    for folder in (data_dir, data_dir / "data"):
        if all((folder / name).is_file() for name in PARQUET_FILES.values()):
            return folder
    return None


def squash(text: str) -> str:
    """A line's text without any whitespace: IAM's tokenised ``tomorrow .`` and a copy's
    ``tomorrow.`` compare equal, since the copies need not keep lines.txt's spacing."""
    return re.sub(r"\s+", "", text)


def _image_kind(field_type: object) -> str | None:
    """``struct`` (Hugging Face's image feature), ``binary`` or None (not an image column)."""
    import pyarrow as pa

    binary = (pa.types.is_binary, pa.types.is_large_binary)
    if any(test(field_type) for test in binary):
        return "binary"
    if pa.types.is_struct(field_type):
        index = field_type.get_field_index("bytes")
        if index >= 0 and any(test(field_type.field(index).type) for test in binary):
            return "struct"
    return None


def iter_rows(path: Path) -> Iterator[tuple[int, bytes | None, str | None]]:
    """``(row number, image bytes, text)`` of one split file, batch by batch.

    A file that is not parquet, lacks the columns or is damaged is a one-line DataError naming
    it; a row with no image bytes yields None (the caller counts it)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(path)
        schema = reader.schema_arrow
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path} is not a readable parquet file ({one_line(e)[:200]})") from None
    fields = {name: schema.field(name).type for name in schema.names}
    kind = _image_kind(fields["image"]) if "image" in fields else None
    text_ok = "text" in fields and (
        pa.types.is_string(fields["text"]) or pa.types.is_large_string(fields["text"])
    )
    if kind is None or not text_ok:
        found = ", ".join(f"{n} ({t})" for n, t in fields.items())[:300] or "none"
        raise DataError(
            f"{path}: expected columns image (PNG bytes, or a struct with a bytes field) and "
            f"text (string); found {found}"
        )
    row = 0
    try:
        for batch in reader.iter_batches(batch_size=BATCH_ROWS, columns=["image", "text"]):
            column = batch.column(0)
            images = column.to_pylist()
            if kind == "struct":  # a null struct's child slot may hold anything: None for it
                data = column.field("bytes").to_pylist()
                images = [None if row is None else d for row, d in zip(images, data, strict=True)]
            for image, text in zip(images, batch.column(1).to_pylist(), strict=True):
                yield row, image, text
                row += 1
    except (pa.ArrowException, OSError) as e:
        raise DataError(
            f"{path} is damaged: row {row} cannot be read ({one_line(e)[:200]})"
        ) from None
    finally:
        reader.close()
