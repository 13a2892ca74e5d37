"""The notebooks run top to bottom (executed with nbclient).

Each example notebook ends with cells that assert its headline result, so executing it
is a test: 03 (TSE refocusing train under a SAR limit), 04 (protocol choice for a lesion
twin), 05 (T1/T2/PD/B1 calibration). Measured on a shared 2-core CPU: 03 about 30 s,
04 about 20 s, 05 about 85 s (all marked slow: scheduled first). Since block pulses are
stepped in 10 µs held steps, 04 took 53-76 s alone (2026-12-07, a slower VM), most of it
in two flip-angle gradient compiles; 37-44 s since the held steps' maps are computed once
per chunk (benchmarks/RESULTS.md, "where a flip-angle gradient's compile goes"), which
also took 05 from 85 to 57 s. In the full suite at -O1, 04 took 110 s and 05 146 s.
Since the notebooks' fits run with ``optimize(..., jit=True)`` (2026-12-07), in the full
suite: 03 16 s (was 25), 04 18 s (31), 05 35 s (57).
"""

import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
SLOW = {p.name for p in NOTEBOOKS}  # each 30-60 s on 2 CPU cores: scheduled first


@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=pytest.mark.slow) if p.name in SLOW else p for p in NOTEBOOKS],
    ids=[p.name for p in NOTEBOOKS],
)
def test_notebook_runs(path, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
