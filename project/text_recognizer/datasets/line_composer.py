"""Composing lines from glyph images, vectorised: no per-character or per-pixel Python loop.

Used by EmnistLinesDataset and SyntheticLinesDataset (and bench/bench_lines.py). Glyphs are placed every ``step`` pixels; where
neighbours overlap the ink takes the maximum (white ink on black). :func:`place_glyphs` writes a
chunk of lines with one numpy fancy assignment per phase, into an output from :func:`zeroed_pages`.
"""

from __future__ import annotations

import mmap

import numpy as np

GLYPH_SIZE = 28

MMAP_BYTES = 32 << 20  # outputs from this size on are mapped from the kernel, in huge pages
CHUNK_LINES = 32  # lines composed together: their rows and glyphs stay in a core's L2 cache


def zeroed_pages(shape: tuple[int, ...]) -> np.ndarray:
    """A zero-filled uint8 array, allocated so that first-touch page faults cost little.

    ``np.zeros`` of a large array gets fresh 4 KB pages from the kernel, each zeroed by a fault
    when first written, which can cost more than composing the line (bench/README.md,
    bench_lines.py). Blocks below glibc's largest mmap threshold (32 MiB) come from ``malloc``,
    which hands back freed memory without faults, so ``np.empty`` + ``fill`` costs a memset
    (numpy advises fresh blocks of 4 MiB or more for huge pages). Larger blocks always come fresh
    from the kernel: private anonymous memory advised for transparent huge pages is zeroed 2 MB
    per fault instead of 4 KB (shared anonymous memory would not get huge pages).
    """
    size = int(np.prod(shape))
    if size < MMAP_BYTES or not hasattr(mmap, "MADV_HUGEPAGE") or not hasattr(mmap, "MAP_PRIVATE"):
        out = np.empty(shape, dtype=np.uint8)
        out.fill(0)
        return out
    buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    buffer.madvise(mmap.MADV_HUGEPAGE)
    return np.frombuffer(buffer, dtype=np.uint8).reshape(shape)


def column_bank(glyphs: np.ndarray) -> np.ndarray:
    """Glyphs ``(G, H, Wg)`` as column-major ``(G + 1, Wg, H)`` plus an empty last glyph (id -1).

    One glyph column is then H contiguous bytes: the layout :func:`compose_lines` scatters for
    lines with glyphs past the edges (pass it with ``column_major`` to prepare a large glyph set
    once for those; other lines are composed from row-major glyphs).
    """
    glyphs = np.asarray(glyphs, dtype=np.uint8)
    bank = np.zeros((len(glyphs) + 1, glyphs.shape[2], glyphs.shape[1]), dtype=np.uint8)
    bank[:-1] = glyphs.transpose(0, 2, 1)
    return bank


def compose_lines(
    glyphs: np.ndarray,
    glyph_ids: np.ndarray,
    x: np.ndarray,
    width: int,
    column_major: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Lines ``(N, H, width)`` uint8: glyph ``glyph_ids[n, i]`` with its left edge at ``x[n, i]``.

    ``glyphs`` is ``(G, H, Wg)`` uint8, ink bright on black (or the ``(G + 1, Wg, H)`` of
    :func:`column_bank` with ``column_major``); ``glyph_ids`` ``(N, L)`` with -1 for "nothing
    here" (spaces, padding); ``x`` ``(N, L)`` integer columns, non-decreasing along each row, may
    be negative or run past ``width`` (the glyph is clipped). Overlapping ink takes the maximum.
    ``out``: a zero-filled ``(N, H, width)`` array to fill.

    Lines whose glyphs all lie inside the width go to :func:`place_glyphs` (row-major, in place);
    lines with a glyph past an edge are scattered column by column into a wider column-major
    canvas and cropped. No Python loop runs per character or pixel.
    """
    xs = np.asarray(x, dtype=np.int64)
    ids = np.asarray(glyph_ids, dtype=np.int64)
    if xs.shape != ids.shape or xs.ndim != 2:
        raise ValueError(f"glyph_ids {ids.shape} and x {xs.shape} must be the same (N, L) shape")
    if (np.diff(xs, axis=1) < 0).any():
        raise ValueError("x must be non-decreasing along each line")
    glyphs = np.asarray(glyphs, dtype=np.uint8)
    if column_major:
        _, wg, h = glyphs.shape
    else:
        _, h, wg = glyphs.shape
    if out is None:
        out = zeroed_pages((len(ids), h, width))
    valid = ids >= 0
    if not valid.any():
        return out
    inside = ((xs >= 0) & (xs + wg <= width)) | ~valid
    placed = inside.all(axis=1)
    line, slot = np.nonzero(valid & placed[:, None])
    if len(line):
        gid = ids[line, slot]
        if column_major:  # row-major copies of the glyphs in use only
            used, gid = np.unique(gid, return_inverse=True)
            row_major = np.ascontiguousarray(glyphs[used].transpose(0, 2, 1))
        else:
            row_major = np.ascontiguousarray(glyphs)
        target = out if out.flags.c_contiguous else np.zeros(out.shape, dtype=np.uint8)
        place_glyphs(row_major, line, gid.reshape(-1), xs[line, slot], target)
        if target is not out:
            out[placed] = target[placed]
    rows = np.flatnonzero(~placed)
    if len(rows):
        if column_major:
            bank = glyphs.reshape(len(glyphs), wg * h)
            sub = np.where(valid[rows], ids[rows], len(glyphs) - 1)
        else:  # column-major copies of only the glyphs in use (the source may be all of EMNIST)
            sub_valid = valid[rows]
            used, inverse = np.unique(ids[rows][sub_valid], return_inverse=True)
            bank = column_bank(glyphs[used]).reshape(len(used) + 1, wg * h)
            sub = np.full(sub_valid.shape, len(used), dtype=np.int64)
            sub[sub_valid] = inverse.reshape(-1)
        out[rows] = _compose_scattered(bank, sub, valid[rows], xs[rows], width, wg, h)
    return out


def place_glyphs(
    glyphs: np.ndarray,
    line: np.ndarray,
    gid: np.ndarray,
    x: np.ndarray,
    out: np.ndarray,
    phase: np.ndarray | None = None,
) -> None:
    """Glyph ``gid[j]`` of row-major ``glyphs`` into line ``line[j]`` of ``out`` at column ``x[j]``.

    ``gid`` >= 0, ``line`` non-decreasing (and ``x`` along each line), every glyph inside the width,
    ``out`` C-contiguous and zero-filled. Overlapping ink takes the maximum. ``phase`` (default
    :func:`glyph_phases`): small integers such that glyphs of one phase never overlap within a
    line.

    Why it is fast: ``out`` is viewed as ``spots``, one entry per byte offset holding the ``H``
    rows (``Wg``-byte records, ``width`` apart) of a glyph whose top-left corner is there. One
    numpy fancy assignment ``spots[offsets] = glyphs`` then places a whole chunk's glyphs: one
    index per glyph, a memmove per row, no per-pixel work (unlike moving bytes one by one, or a
    column-major canvas needing a byte transpose per line). Phase 0 is copied
    into place; later phases read back the rows under their glyphs, take the maximum with the
    glyphs and write them back. Lines go in order, ``CHUNK_LINES`` at a time, so a chunk's
    glyphs and output rows stay in cache between its phases.
    """
    n_out, h, width = out.shape
    glyphs = np.ascontiguousarray(glyphs, dtype=np.uint8)
    wg = glyphs.shape[2]
    size = h * wg
    line, gid, x = (np.asarray(v, dtype=np.int64) for v in (line, gid, x))
    m = len(line)
    if m == 0:
        return
    if phase is None:
        phase = glyph_phases(line, x, wg, n_out)
    phases = int(phase.max()) + 1
    record = np.dtype((np.void, wg))  # one glyph row
    bank = glyphs.reshape(len(glyphs), size).view(np.dtype((np.void, size)))[:, 0]
    # ``spots[p]``: the h records of a glyph whose top-left pixel is byte ``p`` of ``out``.
    spots = np.ndarray(
        (out.size - (h - 1) * width - wg + 1, h), dtype=record, buffer=out, strides=(1, width)
    )
    # Glyphs ordered by chunk, then phase: one gather per chunk, one slice per phase.
    chunk = line // CHUNK_LINES
    if phases > 1:
        key = chunk * phases + phase
        small = (int(chunk[-1]) + 1) * phases <= 1 << 16  # radix sort on 16-bit keys
        order = np.argsort(key.astype(np.uint16) if small else key, kind="stable")
        key, gid, at = key[order], gid[order], line[order] * (h * width) + x[order]
        bounds = np.searchsorted(key, np.arange(chunk[-1] * phases + phases + 1)).tolist()
    else:
        at = line * (h * width) + x
        bounds = np.searchsorted(chunk, np.arange(chunk[-1] + 2)).tolist()
    for c in range(int(chunk[-1]) + 1):
        i, j = bounds[c * phases], bounds[(c + 1) * phases]
        if i == j:
            continue
        pixels = bank.take(gid[i:j])
        for k in range(phases):
            a, b = bounds[c * phases + k], bounds[c * phases + k + 1]
            if a == b:
                continue
            glyph = pixels[a - i : b - i]
            if k == 0:  # glyphs j, j + K... never overlap: copied into place
                spots[at[a:b]] = glyph.view(record).reshape(b - a, h)
            else:  # the records under the glyphs, maxed with them, written back
                under = spots[at[a:b]]
                merged = under.view(np.uint8)
                np.maximum(merged, glyph.view(np.uint8).reshape(b - a, size), out=merged)
                spots[at[a:b]] = under


def glyph_phases(line: np.ndarray, x: np.ndarray, wg: int, n_lines: int) -> np.ndarray:
    """Phase ``j mod K`` of the ``j``-th glyph of a line, ``K`` the most glyphs it stacks on a column.

    ``line``/``x`` sorted by line then column. Glyphs ``j`` and ``j + d`` of a line overlap when
    ``x[j + d] < x[j] + wg``; those ``K`` or more apart never do.
    """
    m = len(line)
    depth = np.ones(n_lines, dtype=np.int64)
    for d in range(1, m):
        over = (line[d:] == line[:-d]) & (x[d:] < x[:-d] + wg)
        if not over.any():
            break
        depth[line[d:][over]] = d + 1
    if depth.max() == 1:
        return np.zeros(m, dtype=np.int64)
    counts = np.bincount(line, minlength=n_lines)
    ordinal = np.arange(m) - np.repeat(np.cumsum(counts) - counts, counts)
    return ordinal % depth[line]


def _compose_scattered(
    bank: np.ndarray,
    ids: np.ndarray,
    valid: np.ndarray,
    xs: np.ndarray,
    width: int,
    wg: int,
    h: int,
) -> np.ndarray:
    """Any layout: per phase, one scatter of glyph columns (H-byte records) by index."""
    n = len(ids)
    out = np.zeros((n, h, width), dtype=np.uint8)
    rec = np.dtype((np.void, h))
    records = bank.reshape(-1, wg, h).view(rec).reshape(-1)
    lo = min(int(xs.min()), 0)
    xs = xs - lo  # canvas column of each glyph; the output starts at canvas column -lo
    phases = stacked_glyphs(xs, valid, wg)
    phase = (np.cumsum(valid, axis=1) - 1) % phases  # k-th glyph of a line -> phase k mod K
    canvas_w = max(int(xs.max()) + wg, width - lo)
    chunk = max(8, (1 << 20) // (canvas_w * h))
    cols = np.arange(wg, dtype=np.int64)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        rows = stop - start
        canvas = np.zeros((rows, canvas_w, h), dtype=np.uint8)
        layer = np.zeros_like(canvas) if phases > 1 else canvas
        where = xs[start:stop] + (np.arange(rows, dtype=np.int64) * canvas_w)[:, None]
        for k in range(phases):
            keep = valid[start:stop] & (phase[start:stop] == k)
            dst = where[keep][:, None] + cols
            src = (ids[start:stop][keep] * wg)[:, None] + cols
            if k > 1:
                layer.fill(0)
            (canvas if k == 0 else layer).view(rec).reshape(-1)[dst] = records[src]
            if k > 0:
                np.maximum(canvas, layer, out=canvas)
        out[start:stop] = canvas[:, -lo : -lo + width].transpose(0, 2, 1)
    return out


def stacked_glyphs(xs: np.ndarray, valid: np.ndarray, glyph_width: int) -> int:
    """The most glyphs of width ``glyph_width`` covering one column, counting ``valid`` ones only.

    The valid glyphs of each row are moved left (order kept, so their columns stay sorted); glyph
    ``i`` and ``i + d`` overlap when ``x[i + d] < x[i] + width``.
    """
    order = np.argsort(~valid, axis=1, kind="stable")
    x_valid = np.take_along_axis(xs, order, axis=1)
    v_valid = np.take_along_axis(valid, order, axis=1)
    k = 1
    for d in range(1, xs.shape[1]):
        if ((x_valid[:, d:] < x_valid[:, :-d] + glyph_width) & v_valid[:, d:]).any():
            k = d + 1
        else:
            break
    return k


def sample_glyph_ids(
    char_classes: np.ndarray, glyph_class: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """A random glyph of the right class for every character (-1 stays -1), independently drawn.

    Draws ``rng.random(char_classes.shape)`` (one uniform per position, used or not).
    """
    char_classes = np.asarray(char_classes, dtype=np.int64)
    uniform = rng.random(char_classes.shape)
    valid = char_classes >= 0
    ids = np.full(char_classes.shape, -1, dtype=np.int64)
    ids[valid] = pick_glyphs(char_classes[valid], glyph_class, uniform[valid])
    return ids


def pick_glyphs(classes: np.ndarray, glyph_class: np.ndarray, uniform: np.ndarray) -> np.ndarray:
    """Glyph ``j`` of class ``classes[i]`` with ``j = floor(uniform[i] * count)`` in label order."""
    glyph_class = np.asarray(glyph_class)
    keys = glyph_class
    if len(keys) and keys.min() >= 0 and keys.max() < 1 << 16:  # radix sort; same stable order
        keys = keys.astype(np.uint8 if keys.max() < 1 << 8 else np.uint16)
    order = np.argsort(keys, kind="stable")
    counts = np.bincount(glyph_class, minlength=int(classes.max(initial=0)) + 1)
    starts = np.cumsum(counts) - counts
    available = counts[classes]
    if (available == 0).any():
        raise ValueError("a character has no glyph image")
    pick = starts[classes] + (uniform * available).astype(np.int64)
    return order[np.minimum(pick, len(order) - 1)]
