"""Every notebook in examples/ runs top to bottom; a failing cell fails the test with its error.

The notebooks run in a fresh ``python3`` kernel from the examples folder, as a reader would run
them. If no ``python3`` kernelspec is installed, jupyter_client falls back to ipykernel's own
(native) kernel in this interpreter, so the test needs ipykernel, not a registered kernel.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="needs nbformat: pip install 'infermode[dev]'")
nbclient = pytest.importorskip("nbclient", reason="needs nbclient: pip install 'infermode[dev]'")
pytest.importorskip("ipykernel", reason="needs ipykernel: pip install 'infermode[dev]'")

from nbclient.exceptions import CellExecutionError  # noqa: E402

pytestmark = pytest.mark.notebook

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
CELL_TIMEOUT_S = 300
# Kernel start-up is slow on a busy 2-core machine; nbclient's default (60 s) is tight there.
STARTUP_TIMEOUT_S = 120

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _failing_cell(nb) -> int | None:
    """Index of the first code cell with an error output (None if there is none)."""
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if any(out.get("output_type") == "error" for out in cell.get("outputs", [])):
            return index
    return None


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        startup_timeout=STARTUP_TIMEOUT_S,
        resources={"metadata": {"path": str(EXAMPLES)}},
    )
    try:
        client.execute()
    except CellExecutionError as exc:
        index = _failing_cell(nb)
        where = f"cell {index}" if index is not None else "a cell"
        # The message holds the cell's source, its printed output and the traceback, colored for
        # a terminal: strip the escapes for pytest's report.
        pytest.fail(
            f"{path.name}: {where} raised {exc.ename}: {exc.evalue}\n{_ANSI.sub('', str(exc))}",
            pytrace=False,
        )
