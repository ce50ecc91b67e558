"""The tour notebooks: stored without outputs, in sync with their generator, they run, and the
cells meant to show a figure do (a run inside the notebook must not switch its backend away)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT

NOTEBOOK_DIR = PROJECT_ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
nbformat = pytest.importorskip("nbformat", reason="pip install -e '.[test]' (nbformat)")
FIGURE = "figure"  # the tag make_notebooks.py puts on a cell meant to show a figure
DRAWING = {"show", "display", "curves_figure"}  # calls that show a figure (plt.show too)


def figure_cell(cell) -> bool:
    return FIGURE in cell.get("metadata", {}).get("tags", [])


def draws(source: str) -> bool:
    """The cell calls show(), plt.show(), display() or curves_figure() outside a function it
    defines (the SETUP cell only defines ``show``)."""
    code = "\n".join(line for line in source.splitlines() if not line.startswith("%"))
    body = [n for n in ast.parse(code).body if not isinstance(n, ast.FunctionDef)]
    calls = [n for stmt in body for n in ast.walk(stmt) if isinstance(n, ast.Call)]
    names = {
        c.func.id if isinstance(c.func, ast.Name) else getattr(c.func, "attr", "") for c in calls
    }
    return bool(names & DRAWING)


def test_the_five_notebooks_exist() -> None:
    assert [p.name[:3] for p in NOTEBOOKS] == ["01-", "02-", "03-", "04-", "05-"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name}: strip outputs before committing"
            assert cell.execution_count is None, f"{path.name}: execution counts stored"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_cells_that_draw_are_tagged_figure(path: Path) -> None:
    """So the run below checks every cell that should show a figure (the SETUP cell only defines
    ``show``)."""
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    for cell in cells:
        assert figure_cell(cell) == draws(cell.source), (path.name, cell.source[:80])
    assert any(figure_cell(c) for c in cells)


def test_notebooks_match_their_generator() -> None:
    sys.path.insert(0, str(NOTEBOOK_DIR))
    try:
        import make_notebooks
    finally:
        sys.path.remove(str(NOTEBOOK_DIR))
    assert make_notebooks.main(["--check"]) == 0


@pytest.mark.timeout(180)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_top_to_bottom(path: Path) -> None:
    """Executed in a kernel that inherits the test environment (tmp data and runs folders)."""
    nbclient = pytest.importorskip("nbclient", reason="pip install -e '.[test]' (nbclient)")
    pytest.importorskip("ipykernel", reason="pip install -e '.[test]' (ipykernel)")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK_DIR)}}
    )
    client.execute()  # raises CellExecutionError with the failing cell's traceback
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    skipped = False  # a part whose shared data is missing prints "skipped: ..." and draws nothing
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        printed = "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")
        skipped = skipped or "skipped:" in printed
        images = [o for o in cell.outputs if "image/png" in o.get("data", {})]
        if figure_cell(cell):
            assert images or skipped, f"{path.name} cell {i} shows no figure:\n{cell.source}"
        else:
            assert not images, f"{path.name} cell {i} shows a figure but is not tagged {FIGURE}"
