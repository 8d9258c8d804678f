"""A store that keeps only the residues training samples (`store.residue_states: sample`).

The store keeps pooled vectors of every protein and the states of the sampled residues; train
and evaluate score every other residue from one forward pass projected on the CAV directions,
detect scores from the forward pass. The numbers must be those of a run that keeps every state
(float noise apart) and the spans identical, while the store no longer holds every residue.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from esm_tcav.engine.forward import ForwardEngine
from esm_tcav.engine.projections import Projections
from esm_tcav.engine.store import EmbeddingStore, kept_rows, union_keep
from esm_tcav.errors import ArtifactError
from esm_tcav.io.proteins import Protein
from tests.test_pipeline import _invoke, write_planted_run

PROTS = [Protein("a", "MKTAYIAKQRQISFVKSHFSRQ"), Protein("b", "MKVLAAGIVG")]


def test_a_sampled_shard_holds_and_serves_only_the_kept_positions(tiny, tmp_path):
    items = list(ForwardEngine(tiny, [1, 3]).iter_residue_states(PROTS))
    store = EmbeddingStore(tmp_path, tiny.fingerprint, residue_dtype="float32")
    keep = {PROTS[0].seq_hash: np.array([2, 5, 9])}  # "b": pooled vectors only
    store.write_shard([store.compact(p, st, keep.get(p.seq_hash, False)) for p, st in items])
    again = EmbeddingStore(tmp_path, tiny.fingerprint, residue_dtype="float32")
    a, b = (p.seq_hash for p in PROTS)
    states_a = items[0][1][3]
    assert np.array_equal(again.residue_rows(a, 3, np.array([9, 2])), states_a[[9, 2]])
    assert np.allclose(again.mean(b, 1), items[1][1][1].mean(0), atol=1e-6)
    with pytest.raises(ArtifactError, match="residue_states"):
        again.residue_rows(a, 3, np.array([2, 3]))  # 3 was not kept
    with pytest.raises(ArtifactError, match="residue_states"):
        again.residues(b, 1)
    shard = next(tmp_path.glob("*/shard-*"))
    assert not list(shard.glob("L*.residues.npy"))
    assert np.load(shard / "L3.sampled.npy").shape == (3, tiny.hidden_size)
    # what the store has is what a run asking for those positions (or fewer) needs
    assert again.missing(PROTS, [1, 3], keep) == []
    assert again.missing(PROTS, [1, 3], {a: np.array([2, 9])}) == []
    assert [p.id for p in again.missing(PROTS, [1, 3], {a: np.array([1])})] == ["a"]
    assert [p.id for p in again.missing(PROTS, [1, 3], True)] == ["a", "b"]

    # positions given in any order, repeated, or every residue in a sampled shard (a library's
    # merged keep): stored sorted, found again, and every residue counts as every residue
    mixed = EmbeddingStore(tmp_path / "mixed", tiny.fingerprint, residue_dtype="float32")
    keep = {a: np.array([9, 2, 9]), b: np.True_}
    mixed.write_shard([mixed.compact(p, st, kept_rows(keep, p.seq_hash)) for p, st in items])
    assert mixed.missing(PROTS, [1, 3], keep) == []
    assert mixed.has(b, 3, residues=True) and not mixed.has(a, 3, residues=True)
    assert np.array_equal(mixed.residues(b, 1), items[1][1][1])


def test_projections_hold_each_protein_on_its_own_directions(tiny):
    rng = np.random.default_rng(0)
    fold, concept = (rng.normal(size=(k, tiny.hidden_size)) for k in (2, 1))
    a, b = PROTS
    groups = [([a], {3: np.r_[fold, concept]}), ([b], {3: concept, 1: concept})]
    proj = Projections.compute(ForwardEngine(tiny, [1, 3]), groups, None, "float32")
    states = dict(ForwardEngine(tiny, [1, 3]).iter_residue_states(PROTS))
    got = proj.project(a.seq_hash, 3, fold[::-1])  # any subset, any order
    assert np.allclose(got, states[a][3] @ fold[::-1].T.astype(np.float32), atol=1e-5)
    assert proj.covers([a, b], {3: concept}) and not proj.covers([b], {3: fold})
    with pytest.raises(ValueError, match="not projected"):
        proj.project(b.seq_hash, 3, fold)  # b was asked for the concept only


def test_union_keep_merges_runs_sharing_one_embedding_pass():
    a, b = (p.seq_hash for p in PROTS)
    assert union_keep([(True, PROTS), (True, PROTS[:1])]) is True
    merged = union_keep([({a: np.array([1, 4])}, PROTS), ({a: np.array([2])}, PROTS[:1])])
    assert merged[a].tolist() == [1, 2, 4] and merged[b] is False
    assert union_keep([({a: np.array([1])}, PROTS), (True, PROTS[1:])])[b] is True


def _summary(out: Path) -> dict:
    return json.loads(next((out / "cavs" / "tiny_esm2").glob("summary_v*.json")).read_text())


@pytest.mark.parametrize("granularity", ["residue", "span", "protein"])
def test_a_sampled_run_gives_the_numbers_and_spans_of_a_full_run(
    tmp_path, tiny_hf_folder, tiny_registry, granularity, monkeypatch
):
    passes = []
    compute = Projections.compute.__func__

    def counted(cls, engine, groups, *args, **kwargs):
        passes.append(len({p.seq_hash for members, _ in groups for p in members}))
        return compute(cls, engine, groups, *args, **kwargs)

    monkeypatch.setattr(Projections, "compute", classmethod(counted))
    runs = {}
    for mode in ("all", "sample"):
        cfg = write_planted_run(
            tmp_path / mode,
            tiny_hf_folder,
            tiny_registry,
            n=20,
            train={"residue_cap": 200, "granularity": granularity},
            store={"residue_states": mode},
        )
        res = _invoke("run", str(cfg), "--steps", "embed,train,evaluate,detect", "--json")
        assert res.exit_code == 0, res.output
        runs[mode] = tmp_path / mode / "out"
    full, sampled = runs["all"], runs["sample"]
    # one forward pass for the projections: train's, over every protein; evaluate and detect
    # (same process) score the held-out proteins from it
    assert len(passes) == 1 and passes[0] > 20
    a, s = _summary(full)["layers"], _summary(sampled)["layers"]
    for layer in a:
        for key in ("auroc", "residue_auroc", "cv_auroc_mean", "residue_f1"):
            assert s[layer][key] == pytest.approx(a[layer][key], abs=1e-5), (layer, key)
        for method, value in a[layer]["thresholds"].items():
            assert s[layer]["thresholds"][method] == pytest.approx(value, rel=1e-4, abs=1e-5)
    evals = [
        json.loads((o / "evaluations" / "tiny_esm2" / "projection_eval.json").read_text())
        for o in (full, sampled)
    ]
    for layer, entry in evals[0]["layers"].items():
        got = evals[1]["layers"][layer]
        assert got["heldout"]["auroc"] == pytest.approx(entry["heldout"]["auroc"], abs=1e-5)
        assert got["randoms"]["aurocs"] == pytest.approx(entry["randoms"]["aurocs"], abs=1e-5)
    spans = [sorted((o / "detections").rglob("spans.tsv")) for o in (full, sampled)]
    assert spans[0] and [p.read_text() for p in spans[0]] == [p.read_text() for p in spans[1]]

    # the sampled store holds the training sample (at most residue_cap residues a layer), not
    # every residue the full store holds
    def rows(out: Path, pattern: str) -> int:
        return sum(np.load(f, mmap_mode="r").shape[0] for f in out.rglob(pattern))

    layers = 3
    assert rows(sampled, "L*.residues.npy") == 0
    if granularity == "residue":
        assert 0 < rows(sampled, "L*.sampled.npy") <= 200 * layers
    if granularity == "protein":  # pooled vectors are all training reads
        assert rows(sampled, "L*.sampled.npy") == 0
    assert rows(full, "L*.residues.npy") > 4 * rows(sampled, "L*.sampled.npy")


def test_auto_keeps_the_sample_once_every_state_would_pass_the_limit(
    tmp_path, tiny_hf_folder, tiny_registry
):
    from esm_tcav.config import load_config
    from esm_tcav.run.context import RunContext

    cfg_path = write_planted_run(tmp_path, tiny_hf_folder, tiny_registry, n=8)
    small = RunContext(load_config(cfg_path)).validate()
    assert small.residue_keep is True  # a few KiB: every state is kept
    tight = RunContext(load_config(cfg_path, {"store.full_states_max_gib": 0})).validate()
    keep = tight.residue_keep
    train_pos, train_neg = tight.dataset.part("train")
    assert set(keep) <= {p.seq_hash for p in train_pos + train_neg}
    assert all(len(v) > 0 for v in keep.values())


def test_switching_modes_and_keep_inputs_and_export_on_a_sampled_store(
    tmp_path, tiny_hf_folder, tiny_registry, monkeypatch
):
    passes = []
    compute = Projections.compute.__func__
    monkeypatch.setattr(
        Projections,
        "compute",
        classmethod(lambda cls, *a, **k: passes.append(1) or compute(cls, *a, **k)),
    )
    cfg = write_planted_run(tmp_path / "run", tiny_hf_folder, tiny_registry, n=12)
    res = _invoke("run", str(cfg), "--steps", "embed,train")
    assert res.exit_code == 0, res.output
    # a store that holds every state is read, whatever the run keeps: no forward pass
    sample = ["--set", "store.residue_states=sample"]
    res = _invoke("run", str(cfg), "--steps", "evaluate,detect", *sample, "--force")
    assert res.exit_code == 0, res.output
    assert passes == []

    # a store keeping a training sample: store.keep_inputs still stores what detect --input
    # reads (every residue state), and a second detect reads it back
    fresh = write_planted_run(
        tmp_path / "fresh", tiny_hf_folder, tiny_registry, n=12, store={"residue_states": "sample"}
    )
    res = _invoke("run", str(fresh), "--steps", "embed,train")
    assert res.exit_code == 0, res.output
    assert len(passes) == 1  # train's
    # evaluate and detect as commands of their own (SLURM jobs): each scores the held-out
    # proteins from a forward pass of its own, and evaluate gets train's held-out AUROCs
    for verb in ("evaluate", "detect"):
        res = _invoke(verb, str(fresh))
        assert res.exit_code == 0, res.output
    assert len(passes) == 3
    evaluation = json.loads(
        (tmp_path / "fresh/out/evaluations/tiny_esm2/projection_eval.json").read_text()
    )
    assert all(entry["matches_training"] for entry in evaluation["layers"].values())
    fasta = tmp_path / "in.fasta"
    fasta.write_text(">A\nMKLVCWHCWHCWHCWHPQRSTVAD\n>B\nMKLVPQRSTVADEGIK\n")
    from esm_tcav.config import load_config
    from esm_tcav.localize.detect import run_detect
    from esm_tcav.run.context import RunContext

    keep = {"store.keep_inputs": True, "detect.layer": 1}
    got = run_detect(RunContext(load_config(fresh, keep)), input_path=fasta)
    assert got["states_from"] == "store" and got["embedded_now"] == 2
    again = run_detect(RunContext(load_config(fresh, keep)), input_path=fasta)
    assert again["states_from"] == "store" and again["embedded_now"] == 0

    # exporting per-residue states the store does not hold: one line, nothing written
    out = tmp_path / "export"
    res = _invoke("store", "export", str(fresh), "--out", str(out))
    assert res.exit_code != 0
    assert "store.residue_states" in res.output and "--include mean" in res.output
    assert not out.exists()
    res = _invoke("store", "export", str(fresh), "--out", str(out), "--include", "mean")
    assert res.exit_code == 0, res.output
