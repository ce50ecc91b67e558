"""A folder's images and (image, transcript) items, kept on disk while `ImageTextDataset` builds
its cache: memory does not grow with the number of images beyond the cache's own arrays.

Held in Python, a folder's names and transcripts cost hundreds of bytes per image (strings, the
name index that pairs transcripts with images, the split lists' index), a tenth of a small line
image's pixels, and a million-image folder would hold them all while its images are decoded. Here
they are rows of one temporary SQLite file (stdlib ``sqlite3``: indexed look-ups, a bounded page
cache) beside the cache being built, about 330 bytes per image while the build runs. It is named
as `fileio.atomic_path`'s temp files, so a killed build's file is removed by the next
(`fileio.clean_stale_temps`). The indexes exist before the rows go in and nothing is sorted at
scale, so SQLite writes no scratch file anywhere else (``temp_store = MEMORY`` holds only small
sorts).

Tables: ``images`` (every image under the folder in listing order, with the names a transcript or
split list may call it: file name, stem, path without suffix) and ``items`` (the paired images in
pairing order, their text and the split a list gave them); ``kept`` numbers the items that go on
to decoding, densely from 0 (the rows of the image array); ``first_item`` (made for split lists)
maps each name to the first item that answers to it. Paths are stored as their file-system bytes
(``surrogateescape``): a name that is not UTF-8 is an image like any other.
"""

from __future__ import annotations

import os
import posixpath
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

from text_recognizer.errors import StorageError, storage_error
from text_recognizer.fileio import temp_prefix

AMBIGUOUS = ""  # `find_image`'s answer when several images answer to a name
PAGE_CACHE_KIB = 8192  # SQLite's page cache: the store's memory, whatever the folder's size
BATCH = 4096  # rows fetched or written per call

_SCHEMA = """
CREATE TABLE images (id INTEGER PRIMARY KEY, rel BLOB NOT NULL UNIQUE, name BLOB NOT NULL,
                     stem BLOB NOT NULL, base BLOB NOT NULL);
CREATE INDEX images_name ON images (name);
CREATE INDEX images_stem ON images (stem);
CREATE INDEX images_base ON images (base);
CREATE TABLE items (seq INTEGER PRIMARY KEY, rel BLOB NOT NULL UNIQUE, text TEXT NOT NULL,
                    split TEXT);
CREATE TABLE kept (k INTEGER PRIMARY KEY, seq INTEGER NOT NULL);
"""
# Each name an item's image answers to -> the first item (in pairing order) that does, as a dict
# built over the items would: an upsert keeping the least seq, so nothing is sorted.
_FIRST_ITEM = """
CREATE TABLE first_item (name BLOB PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO first_item
    SELECT images.rel, items.seq FROM items JOIN images ON images.rel = items.rel
    UNION ALL SELECT images.name, items.seq FROM items JOIN images ON images.rel = items.rel
    UNION ALL SELECT images.stem, items.seq FROM items JOIN images ON images.rel = items.rel
    UNION ALL SELECT images.base, items.seq FROM items JOIN images ON images.rel = items.rel
    ON CONFLICT (name) DO UPDATE SET seq = min(seq, excluded.seq);
"""


def _raw(path: str) -> bytes:
    """A path as its file-system bytes (undecodable names come from scandir as surrogates)."""
    return path.encode("utf-8", "surrogateescape")


def _path(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def image_names(rel: str) -> tuple[str, str, str]:
    """(file name, its stem, the path without suffix): what else may name the image at ``rel``."""
    name = posixpath.basename(rel)
    return name, posixpath.splitext(name)[0], rel.rsplit(".", 1)[0]


class ItemStore:
    """The images and items of one cache build, in a temporary SQLite file in ``directory``
    (removed on `close`). Use as a context manager."""

    def __init__(self, directory: Path, label: str = "items") -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=temp_prefix(label), suffix=".tmp", dir=directory)
            os.close(fd)
        except OSError as e:
            raise storage_error(e, directory, "create a temporary file in") from None
        self.path = Path(name)
        self.db: sqlite3.Connection | None = None
        self.kept_count = 0
        self.by_name_ready = False
        try:
            self.db = sqlite3.connect(name, isolation_level=None)
            # A scratch file: no journal or syncing (a crash loses nothing that is not rebuilt).
            for pragma in ("journal_mode = OFF", "synchronous = OFF", "temp_store = MEMORY"):
                self.db.execute(f"PRAGMA {pragma}")
            self.db.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
            self.db.executescript(_SCHEMA)
            self.db.execute("BEGIN")  # one transaction for the whole build: never committed
        except BaseException as e:
            self.close()
            if isinstance(e, sqlite3.Error):
                raise self._storage(e) from None
            raise

    # ----- lifetime -------------------------------------------------------------------------------
    def close(self) -> None:
        if self.db is not None:
            self.db.close()
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> ItemStore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _storage(self, e: sqlite3.Error) -> StorageError:
        """SQLite's error (a full disk, most likely) as one line naming the file."""
        text = str(e)
        reason = "the disk is full; free some space and run again" if "full" in text else text
        return StorageError(f"cannot write the temporary item list {self.path}: {reason}")

    def _run(self, sql: str, args: Iterable = ()) -> sqlite3.Cursor:
        """One statement; SQLite's errors become a one-line StorageError naming the file."""
        assert self.db is not None
        try:
            return self.db.execute(sql, tuple(args))
        except sqlite3.Error as e:
            raise self._storage(e) from None

    def _many(self, sql: str, rows: Iterable[tuple]) -> None:
        """``sql`` for each row, written a batch at a time."""
        assert self.db is not None
        batch: list[tuple] = []
        try:
            for row in rows:
                batch.append(row)
                if len(batch) == BATCH:
                    self.db.executemany(sql, batch)
                    batch.clear()
            self.db.executemany(sql, batch)
        except sqlite3.Error as e:
            raise self._storage(e) from None

    def _rows(self, sql: str, args: Iterable = ()) -> Iterator[tuple]:
        """The rows of a query, fetched a batch at a time."""
        cursor = self._run(sql, args)
        while rows := cursor.fetchmany(BATCH):
            yield from rows

    # ----- the folder's images ---------------------------------------------------------------------
    def add_images(self, rels: Iterable[str]) -> None:
        """Every image of the folder (posix paths under it), in listing order."""
        self._many(
            "INSERT INTO images VALUES (NULL, ?, ?, ?, ?)",
            ((_raw(rel), *map(_raw, image_names(rel))) for rel in rels),
        )

    def find_image(self, wanted: str, by_stem: bool) -> str | None:
        """The image that answers to ``wanted``, by its path or its file name (with ``by_stem``
        also its stem, or path without suffix): None if none does, `AMBIGUOUS` if several do (a
        path that is also another image's file name, too)."""
        if by_stem:
            sql = "SELECT rel FROM images WHERE rel = ?1 OR name = ?1 OR stem = ?1 OR base = ?1"
        else:
            sql = "SELECT rel FROM images WHERE rel = ?1 OR name = ?1"
        found = {raw for (raw,) in self._run(sql + " LIMIT 3", (_raw(wanted),))}
        return None if not found else _path(found.pop()) if len(found) == 1 else AMBIGUOUS

    def image_with_base(self, base: str) -> str | None:
        """The first listed image whose path without suffix is ``base`` (kraken's sidecar pairing)."""
        cursor = self._run(
            "SELECT rel FROM images WHERE base = ? ORDER BY id LIMIT 1", (_raw(base),)
        )
        found = cursor.fetchone()
        return None if found is None else _path(found[0])

    def images_without_item(self) -> Iterator[str]:
        """The images no transcript was paired with, in listing order."""
        sql = "SELECT rel FROM images WHERE rel NOT IN (SELECT rel FROM items) ORDER BY id"
        return (_path(raw) for (raw,) in self._rows(sql))

    # ----- items ---------------------------------------------------------------------------------
    def add_item(self, rel: str, text: str) -> bool:
        """Pair ``text`` with the image at ``rel``; False (nothing stored) if it already has one."""
        sql = "INSERT OR IGNORE INTO items VALUES (NULL, ?, ?, NULL)"
        return self._run(sql, (_raw(rel), text)).rowcount == 1

    def item_named(self, name: str) -> int | None:
        """The first item (in pairing order) whose image answers to ``name``: its path, file name,
        stem or path without suffix (what a split list may say). The first call indexes every
        item's names (``first_item``); pair every item before it."""
        if not self.by_name_ready:
            for statement in _FIRST_ITEM.strip().split(";\n"):
                self._run(statement)
            self.by_name_ready = True
        row = self._run("SELECT seq FROM first_item WHERE name = ?", (_raw(name),)).fetchone()
        return None if row is None else int(row[0])

    def set_split(self, seq: int, split: str) -> str:
        """Give item ``seq`` ``split`` unless it has one; return the split it has now."""
        self._run("UPDATE items SET split = ?2 WHERE seq = ?1 AND split IS NULL", (seq, split))
        return str(self._run("SELECT split FROM items WHERE seq = ?", (seq,)).fetchone()[0])

    def items(self) -> Iterator[tuple[int, str, str, str | None]]:
        """(seq, image path, text, split from a list or None) of every item, in pairing order."""
        rows = self._rows("SELECT seq, rel, text, split FROM items ORDER BY seq")
        return ((seq, _path(raw), text, split) for seq, raw, text, split in rows)

    # ----- the kept items, numbered as the image array's rows ----------------------------------
    def keep(self, seqs: Iterable[int]) -> int:
        """Number the items ``seqs`` (in that order) 0, 1, ...: the rows they are decoded into."""
        self._many("INSERT INTO kept VALUES (?, ?)", enumerate(seqs, self.kept_count))
        self.kept_count = int(self._run("SELECT count(*) FROM kept").fetchone()[0])
        return self.kept_count

    def kept(self) -> Iterator[tuple[str, str, str | None]]:
        """(image path, text, split from a list or None) of the kept items, in row order."""
        rows = self._rows(
            "SELECT items.rel, items.text, items.split FROM kept JOIN items USING (seq) "
            "ORDER BY kept.k"
        )
        return ((_path(raw), text, split) for raw, text, split in rows)

    def kept_paths(self) -> KeptPaths:
        """The kept items' image paths as a sequence `decode_images` slices a chunk at a time."""
        return KeptPaths(self)


class KeptPaths:
    """``len()``, items and contiguous slices of the kept items' image paths, read from the store
    on demand."""

    def __init__(self, store: ItemStore) -> None:
        self.store = store

    def __len__(self) -> int:
        return self.store.kept_count

    def __getitem__(self, index: slice | int) -> list[str] | str:
        if isinstance(index, int):
            k = range(len(self))[index]  # negative counts from the end; IndexError past it
            return self[k : k + 1][0]
        start, stop, step = index.indices(len(self))
        if step != 1:
            raise ValueError("KeptPaths slices are contiguous")
        rows = self.store._run(
            "SELECT items.rel FROM kept JOIN items USING (seq) "
            "WHERE kept.k >= ?1 AND kept.k < ?2 ORDER BY kept.k",
            (start, stop),
        )
        return [_path(raw) for (raw,) in rows]
