"""``python -m text_recognizer.datasets.update_metadata DATASET [FILENAME ...] [--dry-run]``

Recompute the ``size`` and ``sha256`` of a dataset's placed raw files and write them into its
``metadata.toml`` (FSDL's ``update_metadata.py``), for a maintainer whose source published new
bytes or a user who mirrors a file. DATASET is a raw folder's name (``emnist``, ``iam``: the
metadata file the datasets read, the files from ``data/raw/<name>/``) or a ``metadata.toml`` path
(the files beside it, or ``--from DIR``).

Written with tomlkit, which keeps the file's comments, order and layout: the file stays the
hand-edited document it is. A comment that did not survive would be named in a warning. The new
text is checked as the datasets read it before it replaces the old file (atomically).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from text_recognizer import progress
from text_recognizer.errors import MetadataError, command, run_command


def metadata_and_folder(dataset: str, folder: str | None) -> tuple[Path, Path]:
    """The metadata file DATASET names, and the folder its files are placed in."""
    from text_recognizer import paths

    given = Path(dataset).expanduser()
    if given.suffix == ".toml":
        if not given.is_file():
            raise MetadataError(f"{given}: no such metadata file")
        return given, Path(folder).expanduser() if folder else given.parent
    if "/" in dataset or not dataset:
        raise MetadataError(
            f"{dataset!r} is neither a raw folder's name ({', '.join(raw_names())}) nor a "
            "metadata.toml file"
        )
    metadata = paths.metadata_path(dataset)
    if not metadata.is_file():
        raise MetadataError(
            f"no metadata.toml for {dataset!r}; datasets with one: {', '.join(raw_names())}"
        )
    return metadata, Path(folder).expanduser() if folder else paths.raw_dir(dataset)


def raw_names() -> list[str]:
    from text_recognizer import paths

    return sorted(p.parent.name for p in paths.TRACKED_RAW_DIR.glob("*/metadata.toml"))


def file_tables(document: Any, metadata: Path) -> list[Any]:
    """The tables that describe files: the ``[[files]]`` tables, or the document itself."""
    if "files" in document:
        return list(document["files"])
    if "filename" not in document:
        raise MetadataError(f"{metadata}: no filename at the top level and no [[files]] tables")
    return [document]


def update_metadata(
    metadata: Path, folder: Path, only: list[str] | None = None, dry_run: bool = False
) -> list[str]:
    """Set each placed file's size and sha256 in ``metadata``; return one line per file."""
    import tomlkit

    from text_recognizer.datasets.download import sha256_file
    from text_recognizer.datasets.metadata import load_metadata
    from text_recognizer.fileio import atomic_path

    load_metadata(metadata)  # a broken file is reported as the datasets report it, first
    text = metadata.read_text(encoding="utf-8")
    document = tomlkit.parse(text)
    tables = {str(t["filename"]): t for t in file_tables(document, metadata)}
    unknown = sorted(set(only or ()) - set(tables))
    if unknown:
        raise MetadataError(
            f"{metadata} lists no file {unknown[0]!r}; it lists {', '.join(sorted(tables))}"
        )
    wanted = only or sorted(tables)
    placed = [name for name in wanted if (folder / name).is_file()]
    if not placed:
        raise MetadataError(
            f"none of {', '.join(wanted)} is placed in {folder}; put the file(s) there (or give "
            "--from DIR) and run again"
        )
    lines = []
    for name in wanted:
        if name not in placed:
            lines.append(f"{name}: not placed in {folder}, left as it was")
            continue
        table, path = tables[name], folder / name
        size, digest = path.stat().st_size, sha256_file(path)
        old_size, old_digest = table.get("size"), table.get("sha256")
        if old_size == size and str(old_digest or "").lower() == digest:
            lines.append(f"{name}: unchanged (size {size}, sha256 {digest[:12]}...)")
            continue
        table["size"], table["sha256"] = size, digest
        dropped = ""
        if "max_size" in table:  # an exact size is the limit now (the reader refuses both)
            del table["max_size"]
            dropped = "; max_size dropped (the size is the download's limit now)"
        lines.append(
            f"{name}: size {old_size if old_size is not None else '(none)'} -> {size}, "
            f"sha256 {str(old_digest or '(none)')[:12]}... -> {digest[:12]}...{dropped}"
        )
    new_text = tomlkit.dumps(document)
    lost = [c for c in _comments(text) if c not in set(_comments(new_text))]
    if lost:
        shown = "; ".join(repr(c) for c in lost[:3])
        progress.line(
            f"warning: {len(lost)} comment(s) of {metadata} went with their keys: {shown}"
        )
    if dry_run or new_text == text:
        return lines
    with atomic_path(metadata) as tmp:
        tmp.write_text(new_text, encoding="utf-8")
        try:
            load_metadata(tmp)  # as the datasets will read it; the old file stays if not
        except MetadataError as e:
            raise MetadataError(f"{metadata}: the updated file would not read: {e}") from None
    return lines


def _comments(text: str) -> list[str]:
    return [line[line.index("#") :].strip() for line in text.splitlines() if "#" in line]


@command
def update_metadata_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m text_recognizer.datasets.update_metadata",
        description="Recompute size and sha256 of a dataset's placed raw files into its "
        "metadata.toml (comments and layout kept).",
    )
    parser.add_argument("dataset", help="a raw folder's name (emnist, iam, ...) or a metadata.toml")
    parser.add_argument("files", nargs="*", help="only these files (default: every placed one)")
    parser.add_argument("--from", dest="folder", help="where the files are placed")
    parser.add_argument("--dry-run", action="store_true", help="say what would change only")
    args = parser.parse_args(argv)

    def work() -> int:
        metadata, folder = metadata_and_folder(args.dataset, args.folder)
        lines = update_metadata(metadata, folder, args.files, args.dry_run)
        for line in lines:
            print(line)
        if any(" -> " in line for line in lines):
            print(f"{'would update' if args.dry_run else 'updated'} {metadata}")
        else:
            print(f"{metadata} already holds these sizes and hashes")
        return 0

    return run_command(work)


if __name__ == "__main__":
    sys.exit(update_metadata_main())
