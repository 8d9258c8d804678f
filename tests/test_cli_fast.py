"""The CLI starts without the model stack: `--help`, `models` and `--version` load no torch,
transformers or scikit-learn (benchmarks/cli_startup.py times them)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from esm_tcav._version import __version__

SRC = Path(__file__).resolve().parents[1] / "src"
HEAVY = ("torch", "transformers", "sklearn", "scipy", "matplotlib")


def _modules_after(argv: list[str]) -> tuple[set[str], str]:
    """The heavy modules imported by running the CLI with ``argv``, and its output."""
    code = (
        "import sys\n"
        "from esm_tcav.cli import app\n"
        f"sys.argv = ['esm-tcav', *{argv!r}]\n"
        "try:\n"
        "    app()\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print('HEAVY=' + ','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    heavy = out.rsplit("HEAVY=", 1)[1].strip()
    return {m for m in heavy.split(",") if m}, out


@pytest.mark.parametrize("argv", [["--help"], ["models"], ["--version"]])
def test_light_verbs_do_not_import_the_model_stack(argv):
    heavy, out = _modules_after(argv)
    assert heavy == set(), f"{argv} imported {heavy}"
    assert out.strip()


def test_version_prints_the_package_version():
    _, out = _modules_after(["--version"])
    assert out.startswith(f"esm-tcav {__version__}")


def test_lazy_package_names_still_resolve():
    import esm_tcav

    assert esm_tcav.Span.__name__ == "Span"
    assert issubclass(esm_tcav.Concept, esm_tcav.ConceptArtifact)
    with pytest.raises(AttributeError):
        esm_tcav.no_such_name  # noqa: B018
