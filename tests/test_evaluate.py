"""Evaluation: numbers agree with training, intervals bracket the estimate, figures exist."""

from __future__ import annotations

import json

import pytest

from esm_tcav.concepts.evaluate import run_evaluate
from esm_tcav.concepts.train import run_train
from esm_tcav.config import load_config
from esm_tcav.errors import ArtifactError
from esm_tcav.run.context import RunContext
from tests.test_train import planted_config

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_hf_folder, tiny_registry):
    path = planted_config(
        tmp_path_factory.mktemp("eval"),
        tiny_hf_folder,
        tiny_registry,
        train={"granularity": "span"},
    )
    ctx = RunContext(load_config(path))
    summary = run_train(ctx)
    return ctx, summary, run_evaluate(ctx)


def test_evaluation_writes_every_number_and_figure(evaluated):
    ctx, summary, result = evaluated
    folder = ctx.out / "evaluations" / "tiny_esm2"
    names = {p.name for p in folder.iterdir()}
    assert {
        "projection_eval.json",
        "roc_pr_curves.png",
        "auroc_by_layer.png",
        "L1_random_comparison.png",
        "L3_random_comparison.png",
    } <= names
    assert not [n for n in names if n.startswith(".")]
    for name in names - {"projection_eval.json"}:
        assert (folder / name).read_bytes()[:8] == PNG
    doc = json.loads((folder / "projection_eval.json").read_text())
    assert doc["cav_version"] == summary["version"] and doc["inputs_match"]
    for layer in ("1", "3"):
        e = doc["layers"][layer]
        h = e["heldout"]
        assert h["unit"] == "span"
        # evaluate re-scores the stored CAVs: the same numbers as training
        assert h["auroc"] == pytest.approx(summary["layers"][layer]["auroc"], abs=1e-6)
        assert e["matches_training"]
        lo, hi = h["auroc_ci"]
        assert lo <= h["auroc"] <= hi and h["n_boot"] > 0
        assert h["resampled"].startswith("proteins")
        assert len(e["randoms"]["aurocs"]) == 9
        assert e["stats"]["p"] == pytest.approx(summary["layers"][layer]["p"])
        assert "residue" in e  # span granularity: residue-level numbers too
        assert set(e["curves"]) >= {"fpr", "tpr", "precision", "recall"}
        assert e["stats"]["verdict"].split(":")[0] in ("significant", "not significant")
    assert result["layers"]["1"]["threshold"]["method"] == "f1_max"


def test_evaluate_before_train_is_one_clear_error(tmp_path, tiny_hf_folder, tiny_registry):
    path = planted_config(tmp_path, tiny_hf_folder, tiny_registry)
    with pytest.raises(ArtifactError, match="run `esm-tcav train` first"):
        run_evaluate(RunContext(load_config(path)))
