"""TCAV: directional derivatives checked against finite differences, scores, stage.

The statistics of TCAV scores (t-test vs randoms, BH q) are tested in test_stats.py.
"""

import json

import numpy as np
import pytest
import torch
from transformers import EsmModel

from esm_tcav.concepts.tcav import (
    layer_gradients,
    make_target,
    summed_gradients,
    target_kind,
    target_values,
    tcav_scores,
)
from esm_tcav.errors import ConfigError, ModelMismatchError
from esm_tcav.models.loading import load_model

from .conftest import tiny_config

SEQS = ["MKTAYIAKQRQISFVKSHFSRQ", "MKVLAC", "ACDEFGHIKLMNPQRSTVWY"]


def _gradients(m, seqs, layers, target, path: str) -> dict[int, np.ndarray]:
    """The padded pass (`forward`/`forward_between`) or the packed one (what the stage runs:
    one packed row, the last layer for token 0 alone under a classification head)."""
    return layer_gradients(
        m, seqs, layers, target, m.packed_encoder() if path == "packed" else None
    )


@pytest.mark.parametrize("path", ["padded", "packed"])
@pytest.mark.parametrize("fixture", ["tiny_hf_folder", "tiny_mlm_folder"])
def test_directional_derivative_matches_finite_difference(fixture, path, request, tiny_registry):
    m = load_model("tiny_esm2", request.getfixturevalue(fixture), registry_file=tiny_registry)
    m.to(dtype=torch.float64)
    kind = target_kind(m)
    assert kind == ("sequence_classification" if fixture == "tiny_hf_folder" else "masked_lm")
    target = make_target(m, kind, 1)
    rng = np.random.default_rng(0)
    v = rng.normal(size=32)
    v /= np.linalg.norm(v)
    tokens, mask = m.alphabet.batch(SEQS)
    eps = 1e-4
    for layer in (0, 1, 2, 3):
        s = _gradients(m, SEQS, [layer], target, path)[layer] @ v
        with torch.no_grad():
            h = m.forward(tokens, mask, [layer])[layer]
        step = torch.zeros_like(h)
        for row, seq in enumerate(SEQS):
            step[row, 1 : 1 + len(seq)] = torch.from_numpy(v)
        up = target_values(m, SEQS, layer, h + eps * step, target)
        down = target_values(m, SEQS, layer, h - eps * step, target)
        fd = ((up - down) / (2 * eps)).numpy()
        assert np.allclose(s, fd, rtol=1e-5, atol=1e-9), (layer, s, fd)
        if kind == "sequence_classification" and layer == 3:
            # after the last layer the head reads only the BOS state: residues cannot move it
            assert np.all(s == 0)
        else:
            assert np.all(np.abs(s) > 1e-6)


@pytest.mark.parametrize("path", ["padded", "packed"])
@pytest.mark.parametrize("fixture", ["tiny_hf_folder", "tiny_mlm_folder"])
def test_one_backward_pass_gives_every_layer_as_one_pass_per_layer_does(
    fixture, path, request, tiny_registry
):
    """The derivatives at layers 0..3 from ONE forward/backward pass (the intermediate states
    stay in the graph) equal those of a separate pass per layer, which the finite-difference
    test above validates."""
    m = load_model("tiny_esm2", request.getfixturevalue(fixture), registry_file=tiny_registry)
    m.to(dtype=torch.float64)
    target = make_target(m, target_kind(m), 1)
    together = _gradients(m, SEQS, [3, 0, 2, 1], target, path)
    assert sorted(together) == [0, 1, 2, 3]
    for layer in range(4):
        alone = _gradients(m, SEQS, [layer], target, path)[layer]
        assert np.allclose(together[layer], alone, rtol=1e-10, atol=1e-12), layer
    assert np.abs(together[1]).max() > 1e-6


@pytest.mark.parametrize("fixture", ["tiny_hf_folder", "tiny_mlm_folder"])
def test_packed_pass_gives_the_padded_gradients(fixture, request, tiny_registry):
    """In float32, as the stage runs: the packed row (and, under the classification head, the
    last layer for token 0 alone) gives the padded batch's gradients within float noise, and
    the exact zeros at the last layer where the head reads token 0 alone."""
    m = load_model("tiny_esm2", request.getfixturevalue(fixture), registry_file=tiny_registry)
    target = make_target(m, target_kind(m), 1)
    seqs = [*SEQS, "MKT", SEQS[0] * 3]
    padded = _gradients(m, seqs, [1, 2, 3], target, "padded")
    packed = _gradients(m, seqs, [1, 2, 3], target, "packed")
    for layer in (1, 2, 3):
        scale = np.abs(padded[layer]).max()
        if m.head_reads_first_token and layer == 3:
            assert scale == 0 and not packed[layer].any()
            continue
        assert np.abs(packed[layer] - padded[layer]).max() <= 1e-5 * scale, layer


def test_batched_gradients_equal_one_by_one(tiny_hf_folder, tiny_registry):
    m = load_model("tiny_esm2", tiny_hf_folder, registry_file=tiny_registry)
    target = make_target(m, "sequence_classification", 0)
    both = summed_gradients(m, SEQS, 2, target)
    for i, seq in enumerate(SEQS):
        one = summed_gradients(m, [seq], 2, target)[0]
        assert np.allclose(both[i], one, atol=1e-5)


def test_model_without_head_is_a_clear_error(tmp_path, tiny_registry):
    torch.manual_seed(0)
    folder = tmp_path / "bare"
    EsmModel(tiny_config(), add_pooling_layer=False).save_pretrained(folder)
    from .conftest import _write_vocab

    _write_vocab(folder)
    m = load_model("tiny_esm2", folder, registry_file=tiny_registry)
    with pytest.raises(
        ModelMismatchError,
        match="no classification or masked-LM head.*EsmForSequenceClassification",
    ):
        target_kind(m)


def test_target_mismatch_and_class_range(tiny_hf_folder, tiny_registry):
    m = load_model("tiny_esm2", tiny_hf_folder, registry_file=tiny_registry)
    with pytest.raises(ConfigError, match="tcav.target is 'masked_lm'"):
        target_kind(m, "masked_lm")
    with pytest.raises(ConfigError, match="target_class 5 out of range"):
        make_target(m, "sequence_classification", 5)


def test_tcav_scores_sign_and_magnitude():
    r = tcav_scores(np.array([1.0, -1.0, 2.0, 0.0]))
    assert r["score"] == 0.5 and r["n_positive"] == 2
    assert r["magnitude"] == pytest.approx(3 / 4)
    assert r["mean_abs_derivative"] == pytest.approx(1.0)
    assert tcav_scores(np.zeros(3))["magnitude"] == 0.5


# ---------------------------------------------------------------------- the stage


@pytest.fixture(scope="module", params=["tiny_hf_folder", "tiny_mlm_folder"])
def trained_any(request, tmp_path_factory, tiny_registry):
    from .test_detect import _train

    folder = request.getfixturevalue(request.param)
    return _train(tmp_path_factory.mktemp("tcav_run"), folder, tiny_registry)


def test_run_tcav_writes_scores_tests_and_plot(trained_any):
    from esm_tcav.concepts.artifacts import load_concept
    from esm_tcav.concepts.tcav import run_tcav

    from .test_detect import ctx_for

    ctx = ctx_for(trained_any)
    result = run_tcav(ctx)
    out = ctx.out / "tcav" / "tiny_esm2"
    assert (out / "tcav_scores.png").stat().st_size > 1000
    saved = json.loads((out / "tcav_scores.json").read_text())
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]
    assert saved["proteins"] == len(saved["protein_ids"]) <= 4
    assert set(saved["layers"]) == {"1", "2", "3"}
    kind = saved["target"]["kind"]
    for key, row in saved["layers"].items():
        assert 0 <= row["score"] <= 1 and 0 <= row["magnitude"] <= 1
        assert len(row["random_scores"]) == 5
        if kind == "sequence_classification" and key == "3":
            assert not row["testable"] and row["p"] is None and "not testable" in row["verdict"]
        else:
            assert row["testable"] and 0 < row["p"] <= 1 and row["q"] >= row["p"]
    # the stored score is the fraction of proteins whose derivative along the CAV is positive
    ds = ctx.dataset
    by_id = {p.id: p for p in ds.proteins}
    seqs = [by_id[i].sequence for i in saved["protein_ids"]]
    art = load_concept(ctx.out, "tiny_esm2", 2)
    target = make_target(ctx.loaded, kind, ctx.cfg.tcav.target_class)
    s = summed_gradients(ctx.loaded, seqs, 2, target) @ art.cav.direction.astype(np.float64)
    assert saved["layers"]["2"]["score"] == pytest.approx(np.mean(s > 0))
    assert result["layers"]["2"]["score"] == saved["layers"]["2"]["score"]
