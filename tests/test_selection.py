"""Nothing chosen during training may depend on the test proteins.

Two runs of the real `train` stage (tiny ESM-2) share their training proteins; the second has
the test labels permuted (the test positives become negatives, the test negatives get spans at
random places). Layer, thresholds, span decoding and probability calibration must come out
identical; the held-out numbers must differ (so the test set was really changed and read).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from esm_tcav.concepts.artifacts import best_layer, load_concept
from esm_tcav.concepts.train import run_train
from esm_tcav.config import load_config
from esm_tcav.run.context import RunContext
from tests.test_train import planted_config


def _split_files(folder, permute: bool) -> None:
    """Write train/test files from the planted set; `permute` scrambles the test labels."""
    pos = [json.loads(line) for line in (folder / "pos.jsonl").read_text().splitlines()]
    fasta = (folder / "neg.fasta").read_text().split(">")[1:]
    neg = [(r.split("\n")[0], r.split("\n")[1]) for r in fasta]
    n_tr = 16
    train_pos, test_pos = pos[:n_tr], pos[n_tr:]
    train_neg, test_neg = neg[:n_tr], neg[n_tr:]
    if permute:
        rng = np.random.default_rng(1)
        new_pos = []
        for pid, seq in test_neg:
            n = 12
            start = int(rng.integers(1, len(seq) - n))
            ann = [{"name": "m", "start": start, "end": start + n - 1}]
            new_pos.append({"accession": pid, "sequence": seq, "ground_truth_annotations": ann})
        test_neg = [(r["accession"], r["sequence"]) for r in test_pos]
        test_pos = new_pos

    def jsonl(rows):
        return "".join(json.dumps(r) + "\n" for r in rows)

    def fa(rows):
        return "".join(f">{i}\n{s}\n" for i, s in rows)

    (folder / "train_pos.jsonl").write_text(jsonl(train_pos))
    (folder / "test_pos.jsonl").write_text(jsonl(test_pos))
    (folder / "train_neg.fasta").write_text(fa(train_neg))
    (folder / "test_neg.fasta").write_text(fa(test_neg))
    doc = yaml.safe_load((folder / "run.yaml").read_text())
    doc["data"].update(
        positives="train_pos.jsonl",
        negatives="train_neg.fasta",
        test_positives="test_pos.jsonl",
        test_negatives="test_neg.fasta",
    )
    doc["model"]["layers"] = [1, 2, 3]
    (folder / "run.yaml").write_text(yaml.safe_dump(doc))


def _train(folder, tiny_hf_folder, tiny_registry, permute: bool):
    path = planted_config(folder, tiny_hf_folder, tiny_registry, n=24)
    _split_files(folder, permute)
    ctx = RunContext(load_config(path))
    summary = run_train(ctx)
    concepts = {int(k): load_concept(ctx.out, ctx.model_name, int(k)) for k in summary["layers"]}
    return ctx, summary, concepts


@pytest.fixture(scope="module")
def pair(tmp_path_factory, tiny_hf_folder, tiny_registry):
    a = _train(tmp_path_factory.mktemp("orig"), tiny_hf_folder, tiny_registry, False)
    b = _train(tmp_path_factory.mktemp("perm"), tiny_hf_folder, tiny_registry, True)
    return a, b


def test_permuted_test_labels_change_no_choice(pair):
    (ca, sa, ka), (cb, sb, kb) = pair
    assert sa["best_layer"] == sb["best_layer"]
    assert best_layer(ca.out, ca.model_name) == best_layer(cb.out, cb.model_name)
    assert "cross-validated" in sa["best_layer_chosen_by"]
    for layer in ka:
        ta, tb = ka[layer].thresholds, kb[layer].thresholds
        assert ta["computed_on"].startswith("out-of-fold") and "test" not in ta["computed_on"]
        for method in ta["methods"]:
            assert ta["methods"][method]["value"] == tb["methods"][method]["value"]
        assert ta["decoding"]["grid"] == tb["decoding"]["grid"]
        assert ka[layer].rule() == kb[layer].rule()
        assert ta["calibration"] == tb["calibration"]
        assert np.array_equal(ka[layer].cav.direction, kb[layer].cav.direction)
    # the test set did change what is reported
    aucs_a = [v["auroc"] for v in sa["layers"].values()]
    aucs_b = [v["auroc"] for v in sb["layers"].values()]
    assert min(aucs_a) > 0.8 and max(aucs_b) < 0.8


def test_concept_carries_decoding_calibration_and_grade(pair):
    (ctx, summary, concepts), _ = pair
    c = concepts[summary["best_layer"]]
    dec = c.thresholds["decoding"]
    assert (c.smoothing_window, c.min_span_length, c.merge_gap) == (
        dec["smoothing_window"],
        dec["min_span_length"],
        dec["merge_gap"],
    )
    p = c.probability(np.array([-50.0, c.threshold, 50.0]))
    assert p[0] < 0.01 and p[2] > 0.99 and p[0] <= p[1] <= p[2]
    assert c.grade in ("strong", "usable", "weak", "not a concept")
    row = summary["layers"][str(summary["best_layer"])]
    assert set(row["controls"]) >= {"sequence", "position"}
    assert row["grade"] == c.grade
