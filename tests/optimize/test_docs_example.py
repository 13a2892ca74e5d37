"""The runnable example in docs/optimize.md runs and shows what it claims."""

import pathlib
import re

import pytest

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "optimize.md"


@pytest.mark.slow
def test_docs_example_runs(capsys):
    code = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(code) == 1
    ns = {}
    exec(compile(code[0], str(DOC), "exec"), ns)
    out = capsys.readouterr().out
    assert "optimized" in out
    const = -float(ns["loss"](ns["jnp"].full(8, 0.35)))
    assert -ns["res"].best_loss > const
    ratio = float(ns["b1_rms"](ns["flash_train"](ns["res"].best_params))) / ns["limit"]
    assert ratio <= 1 + 1e-6
