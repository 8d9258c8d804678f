"""Training: synthetic activations with a planted direction, grouping, granularities, versions.

The first tests use a fake store of synthetic activations (no model), where the truth is
known; the later ones run the real stage on the tiny random ESM-2 of conftest.py.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from esm_tcav.concepts import cav as cav_module
from esm_tcav.concepts.artifacts import concept_dir, latest_version, load_concept, randoms_dir
from esm_tcav.concepts.stats import add_qvalues
from esm_tcav.concepts.train import (
    cross_validate,
    plan_examples,
    random_labels,
    resolve_granularity,
    run_train,
    train_layer,
)
from esm_tcav.config import config_from_dict, load_config
from esm_tcav.errors import ConfigError
from esm_tcav.io.proteins import Protein, Span
from esm_tcav.run.context import RunContext

H = 24
AA = "ADEFGIKLMNPQRSTVY"


# ---------------------------------------------------------------------- synthetic activations


class FakeStore:
    """Per-residue states: Gaussian noise, plus a planted direction on concept residues."""

    def __init__(self, proteins: list[Protein], strength: float, signal_masks=None, seed=0):
        rng = np.random.default_rng(seed)
        self.direction = rng.normal(size=H)
        self.direction /= np.linalg.norm(self.direction)
        self.states = {}
        for p in proteins:
            x = rng.normal(size=(p.length, H)).astype(np.float32)
            mask = (signal_masks or {}).get(p.id, p.residue_mask())
            x[mask] += strength * self.direction.astype(np.float32)
            self.states[p.seq_hash] = x

    def residues(self, seq_hash: str, layer: int) -> np.ndarray:
        return self.states[seq_hash]

    def residue_rows(self, seq_hash: str, layer: int, positions: np.ndarray) -> np.ndarray:
        return self.states[seq_hash][positions]

    def mean(self, seq_hash: str, layer: int) -> np.ndarray:
        return self.states[seq_hash].mean(axis=0)


def synthetic_proteins(n_pos: int = 30, n_neg: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    pos, neg = [], []
    for i in range(n_pos):
        length = int(rng.integers(60, 90))
        start = int(rng.integers(1, length - 25))
        seq = "".join(rng.choice(list(AA), length))
        pos.append(Protein(f"P{i}", seq, (Span(start, start + 19, "c"),)))
    for i in range(n_neg):
        neg.append(Protein(f"N{i}", "".join(rng.choice(list(AA), int(rng.integers(60, 90))))))
    return pos, neg


def _cfg(**train):
    return config_from_dict(
        {
            "data": {"positives": "x", "negatives": "y"},
            "train": {
                "n_random": 19,
                "pca_components": 8,
                "folds": 3,
                "residue_cap": 2000,
                **train,
            },
            "evaluate": {"alpha": 0.05},
        }
    )


def _split(pos, neg):
    return (pos[:20], neg[:20]), (pos[20:], neg[20:])


def _layer(store, pos, neg, cfg, granularity="residue"):
    (trp, trn), (tep, ten) = _split(pos, neg)
    tr = plan_examples(granularity, trp, trn, cfg.train.residue_cap, cfg.seed)
    te = plan_examples(granularity, tep, ten, cfg.train.residue_cap, cfg.seed, test=True)
    residue_test = (
        te if granularity == "residue" else plan_examples("residue", tep, ten, 0, 0, test=True)
    )
    return train_layer(store, 3, tr, te, residue_test, cfg, "c", granularity)


def test_planted_direction_found_and_shuffled_labels_are_not():
    pos, neg = synthetic_proteins()
    cfg = _cfg(n_random=39)
    planted = _layer(FakeStore(pos + neg, strength=5.0), pos, neg, cfg)
    # the CAV recovers the planted direction, up to the noise
    assert planted.report["heldout"]["auroc"] > 0.99
    # null: the same signal at random residues of every protein, unrelated to the spans
    rng = np.random.default_rng(5)
    masks = {p.id: rng.random(p.length) < 0.25 for p in pos + neg}
    null = _layer(FakeStore(pos + neg, strength=5.0, signal_masks=masks), pos, neg, cfg)
    assert abs(null.report["heldout"]["auroc"] - 0.5) < 0.05
    stats = {3: planted.stats, 4: null.stats}
    add_qvalues(stats, 0.05)
    assert planted.stats["p_empirical"] == pytest.approx(1 / 40) == planted.stats["min_p"]
    assert planted.stats["p"] < 0.01  # the t-test over the random AUROCs drives the verdict
    assert planted.stats["significant"]
    assert null.stats["p"] > 0.2 and not null.stats["significant"]
    assert null.stats["verdict"].startswith("not significant")
    # random CAVs sit near 0.5 in both cases
    for res in (planted, null):
        assert abs(res.stats["random_mean"] - 0.5) < 0.1
        assert len(res.randoms) == 39


def test_cav_direction_matches_the_planted_one():
    pos, neg = synthetic_proteins()
    store = FakeStore(pos + neg, strength=5.0)
    res = _layer(store, pos, neg, _cfg(pca_components=None))
    assert float(res.cav.direction @ store.direction) > 0.8


@pytest.mark.parametrize("granularity", ["protein", "span", "residue"])
def test_every_granularity_trains(granularity):
    pos, neg = synthetic_proteins()
    store = FakeStore(pos + neg, strength=5.0)
    res = _layer(store, pos, neg, _cfg(n_random=5), granularity)
    assert res.report["heldout"]["unit"] == granularity
    assert res.report["heldout"]["auroc"] > 0.9
    assert res.thresholds["level"] == "residue"  # spans exist: thresholds on residue scores
    assert res.report["heldout"]["residue_auroc"] > 0.9


def test_residue_examples_are_balanced_capped_and_seeded():
    pos, neg = synthetic_proteins()
    a = plan_examples("residue", pos, neg, 600, seed=3)
    b = plan_examples("residue", pos, neg, 600, seed=3)
    c = plan_examples("residue", pos, neg, 600, seed=4)
    assert len(a) == 600 and int(a.y.sum()) == 300
    assert np.array_equal(a.start, b.start) and not np.array_equal(a.start, c.start)
    # labels agree with the spans: 1 inside, 0 outside or in negatives
    for pi, s, y in zip(a.prot, a.start, a.y, strict=True):
        p = a.proteins[pi]
        assert bool(y) == bool(p.residue_mask()[s])


def test_span_windows_are_length_matched_and_outside_spans():
    pos, neg = synthetic_proteins()
    ex = plan_examples("span", pos, neg, 0, seed=0)
    span_lengths = sorted(
        int(e - s) for s, e, y in zip(ex.start, ex.end, ex.y, strict=True) if y == 1
    )
    for s, e, y, pi in zip(ex.start, ex.end, ex.y, ex.prot, strict=True):
        if y == 0:
            assert int(e - s) in span_lengths
            assert not ex.proteins[pi].residue_mask()[s:e].any()


def test_cv_folds_group_by_protein():
    pos, neg = synthetic_proteins()
    ex = plan_examples("residue", pos, neg, 2000, seed=0)
    seen = []

    class Rec:
        def decision_function(self, X):
            return np.zeros(len(X))

    def fit(rows, labels):
        seen.append(set(ex.prot[rows].tolist()))
        return Rec()

    def decide(c, rows):
        validation = set(ex.prot[rows].tolist())
        assert not validation & seen[-1], "a protein is in both training and validation folds"
        return np.random.default_rng(0).random(len(rows))

    out = cross_validate(fit, decide, ex.y.astype(int), ex.prot, 5, 0)
    assert out["folds_used"] == 5 and len(out["fold_aurocs"]) == 5


def test_random_split_mode_trains_randoms_near_chance():
    pos, neg = synthetic_proteins()
    res = _layer(FakeStore(pos + neg, 5.0), pos, neg, _cfg(random_mode="random_split"))
    assert res.report["randoms"]["mode"] == "random_split"
    assert abs(res.stats["random_mean"] - 0.5) < 0.1 and res.report["heldout"]["auroc"] > 0.99


def test_random_split_draws_two_disjoint_negative_sets():
    y = np.r_[np.ones(10, int), np.zeros(30, int)]
    rows, labels = random_labels("random_split", y, np.random.default_rng(0))
    assert (y[rows] == 0).all() and len(set(rows.tolist())) == len(rows) == 20
    assert labels.sum() == 10
    rows, labels = random_labels("label_shuffle", y, np.random.default_rng(0))
    assert len(rows) == 40 and labels.sum() == 10 and not np.array_equal(labels, y)


def test_plugin_classifier_without_shared_preprocessing(monkeypatch):
    """Any linear classifier with fit/decision_function/raw_linear plugs in."""

    class MeanDiff:
        def __init__(self, **params):
            pass

        def fit(self, X, y):
            self.w = X[y == 1].mean(0) - X[y == 0].mean(0)
            self.b = -float(((X[y == 1].mean(0) + X[y == 0].mean(0)) / 2) @ self.w)
            return self

        def raw_linear(self):
            return self.w, self.b

        def decision_function(self, X):
            return X @ self.w + self.b

    monkeypatch.setitem(cav_module.CLASSIFIERS, "meandiff", MeanDiff)
    pos, neg = synthetic_proteins()
    res = _layer(FakeStore(pos + neg, 5.0), pos, neg, _cfg(classifier="meandiff", n_random=4))
    assert res.report["heldout"]["auroc"] > 0.99
    assert res.report["randoms"]["preprocessing"] == "refit per random CAV"
    with pytest.raises(ConfigError, match="train.classifier 'nope' unknown"):
        _layer(FakeStore(pos + neg, 5.0), pos, neg, _cfg(classifier="nope"))


def test_granularity_auto_and_missing_spans():
    assert resolve_granularity("auto", True) == "residue"
    assert resolve_granularity("auto", False) == "protein"
    pos = [Protein("a", "ACDEFGHIKL")]
    with pytest.raises(ConfigError, match="needs concept spans"):
        plan_examples("residue", pos, pos, 100, 0)


# ---------------------------------------------------------------------- the stage, tiny model

MOTIF = "CWHCWHCWHCWH"
BACKGROUND = list("ADEFGIKLMNPQRSTVY")


def planted_config(
    folder: Path, tiny_hf_folder: Path, tiny_registry: Path, n: int = 16, **sections
) -> Path:
    """A planted-motif dataset (JSONL positives with spans, FASTA negatives) and its config."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with (folder / "pos.jsonl").open("w") as fh:
        for i in range(n):
            length = int(rng.integers(40, 70))
            start = int(rng.integers(3, length - len(MOTIF) - 3))
            seq = "".join(rng.choice(BACKGROUND, length))
            seq = seq[:start] + MOTIF + seq[start + len(MOTIF) :]
            fh.write(
                json.dumps(
                    {
                        "accession": f"P{i}",
                        "sequence": seq,
                        "ground_truth_annotations": [
                            {"name": "m", "start": start + 1, "end": start + len(MOTIF)}
                        ],
                    }
                )
                + "\n"
            )
    (folder / "neg.fasta").write_text(
        "".join(
            f">N{i}\n{''.join(rng.choice(BACKGROUND, int(rng.integers(40, 70))))}\n"
            for i in range(n)
        )
    )
    doc = {
        "output_dir": "out",
        "seed": 0,
        "model": {
            "name": "tiny_esm2",
            "path": str(tiny_hf_folder),
            "registry_file": str(tiny_registry),
            "layers": [1, 3],
        },
        "data": {"concept": "motif", "positives": "pos.jsonl", "negatives": "neg.fasta"},
        "train": {"n_random": 9, "pca_components": 16, "folds": 3},
        "evaluate": {"bootstrap": 50},
    }
    for key, value in sections.items():
        doc.setdefault(key, {}).update(value)
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_hf_folder, tiny_registry):
    path = planted_config(tmp_path_factory.mktemp("train"), tiny_hf_folder, tiny_registry)
    ctx = RunContext(load_config(path))
    return ctx, run_train(ctx)


def test_layout_summary_and_split(trained):
    ctx, summary = trained
    root = ctx.out / "cavs" / "tiny_esm2"
    assert summary["version"] == 1 and not summary["reused"]
    assert summary["best_layer"] in (1, 3) and set(summary["layers"]) == {"1", "3"}
    for layer in (1, 3):
        c = concept_dir(ctx.out, "tiny_esm2", layer, 1)
        assert {p.name for p in c.iterdir()} == {
            "cav.safetensors",
            "scaler.safetensors",
            "pca.safetensors",
            "classifier.safetensors",
            "report.json",
            "thresholds.json",
            "split.json",
            "manifest.json",
        }
        r = randoms_dir(ctx.out, "tiny_esm2", layer, 1)
        assert {p.name for p in r.iterdir()} == {
            "randoms.safetensors",
            "randoms.json",
            "manifest.json",
        }
        manifest = json.loads((c / "manifest.json").read_text())
        for key in (
            "files",
            "seeds",
            "config",
            "package_version",
            "model_fingerprint",
            "inputs_hash",
            "hidden_size",
        ):
            assert key in manifest
        thr = json.loads((c / "thresholds.json").read_text())
        assert thr["score"] == "cav projection (signed distance, raw units)"
        assert set(thr["methods"]) == {"f1_max", "precision_at_recall", "fpr"}
        # calibrated without looking at the held-out proteins
        assert thr["calibrated_on"] == "out-of-fold CV scores of the training proteins"
    assert (root / "summary_v1.json").is_file()
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary leftovers
    # no held-out protein was in training
    art = load_concept(ctx.out, "tiny_esm2", 1)
    train_ids = set(art.split["train"]["positives"] + art.split["train"]["negatives"])
    test_ids = set(art.split["test"]["positives"] + art.split["test"]["negatives"])
    assert train_ids and test_ids and not train_ids & test_ids
    assert art.metrics["train"]["proteins"] == len(train_ids)
    # the planted motif is visible to the tiny random model
    assert summary["layers"][str(summary["best_layer"])]["auroc"] > 0.9


def test_unchanged_inputs_reuse_and_force_makes_v2(trained, tiny_hf_folder, tiny_registry):
    ctx, _ = trained
    v1 = concept_dir(ctx.out, "tiny_esm2", 1, 1)
    before = _hashes(v1)
    again = run_train(ctx)
    assert again["reused"] and again["version"] == 1 and latest_version(ctx.out, "tiny_esm2") == 1
    forced = run_train(ctx, force=True)
    assert forced["version"] == 2 and not forced["reused"]
    assert _hashes(v1) == before  # v1 untouched
    assert latest_version(ctx.out, "tiny_esm2") == 2
    # same inputs, same seeds: the same numbers
    assert forced["layers"]["1"]["auroc"] == pytest.approx(again["layers"]["1"]["auroc"])
    # a changed training setting is a new version, not a reuse
    cfg = load_config(ctx.cfg.base_dir + "/run.yaml", {"train.C": 0.5})
    changed = run_train(RunContext(cfg))
    assert changed["version"] == 3 and not changed["reused"]
