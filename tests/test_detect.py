"""Detection end to end on a tiny model with a planted motif: files, metrics, modes, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from esm_tcav.concepts.cav import CAV
from esm_tcav.config import load_config
from esm_tcav.engine.forward import ForwardEngine
from esm_tcav.errors import ArtifactError, ConfigError, InputError
from esm_tcav.io.proteins import Protein
from esm_tcav.localize.detect import (
    iter_one_pass_scores,
    iter_sliding_window_scores,
    run_detect,
    window_starts,
)
from esm_tcav.models.loading import load_model
from esm_tcav.run.context import RunContext

MOTIF = "CWHCHWCYHWCH"  # residues the backgrounds never use
BACKGROUND = "ADEGIKLMNPQRSTV"


def _background(rng: np.random.Generator, n: int) -> str:
    return "".join(rng.choice(list(BACKGROUND), n))


def write_planted_data(folder: Path, n_pos: int = 12, n_neg: int = 12, seed: int = 0) -> None:
    """Positives carry 2-3 motif copies (spans) in random backgrounds; negatives none."""
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n_pos):
        seq, anns = _background(rng, int(rng.integers(5, 15))), []
        for _ in range(int(rng.integers(2, 4))):
            start = len(seq) + 1
            seq += MOTIF
            anns.append(
                {"motif_id": "M", "start": start, "end": start + len(MOTIF) - 1, "name": "motif"}
            )
            seq += _background(rng, int(rng.integers(8, 20)))
        lines.append(
            json.dumps(
                {"accession": f"POS{i:02d}", "sequence": seq, "ground_truth_annotations": anns}
            )
        )
    (folder / "pos.jsonl").write_text("\n".join(lines) + "\n")
    neg = [f">NEG{i:02d}\n{_background(rng, int(rng.integers(50, 90)))}" for i in range(n_neg)]
    (folder / "neg.fasta").write_text("\n".join(neg) + "\n")


def write_config(folder: Path, model_folder: Path, registry: Path, **sections) -> Path:
    doc = {
        "output_dir": "out",
        "seed": 0,
        "model": {
            "name": "tiny_esm2",
            "path": str(model_folder),
            "registry_file": str(registry),
            "layers": [1, 2, 3],
        },
        "data": {
            "concept": "motif",
            "positives": "pos.jsonl",
            "negatives": "neg.fasta",
            "test_fraction": 0.4,
        },
        "train": {
            "granularity": "residue",
            "n_random": 5,
            "folds": 2,
            "pca_components": 16,
            "residue_cap": 2000,
        },
        "detect": {
            "smoothing_window": 3,
            "min_span_length": 5,
            "merge_gap": 2,
            "heatmaps_top": 2,
            "heatmaps_random": 1,
        },
        "tcav": {"max_proteins": 4},
        "evaluate": {"bootstrap": 0},
    }
    for key, value in sections.items():
        doc.setdefault(key, {}).update(value)
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _train(folder: Path, model_folder: Path, registry: Path) -> Path:
    from esm_tcav.concepts.train import run_train

    write_planted_data(folder)
    cfg_path = write_config(folder, model_folder, registry)
    run_train(RunContext(load_config(cfg_path)))
    return cfg_path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_hf_folder, tiny_registry) -> Path:
    """Config path of a run trained on the planted motif with the tiny classifier model."""
    return _train(tmp_path_factory.mktemp("detect_run"), tiny_hf_folder, tiny_registry)


def ctx_for(cfg_path: Path, **overrides) -> RunContext:
    return RunContext(load_config(cfg_path, overrides))


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")} if root.exists() else set()


# ---------------------------------------------------------------------- pure helpers


def test_window_starts_cover_every_residue():
    assert window_starts(10, 20, 5) == [0]
    assert window_starts(20, 20, 5) == [0]
    assert window_starts(32, 20, 5) == [0, 5, 10, 12]
    assert window_starts(30, 20, 5) == [0, 5, 10]


def test_sliding_window_scores_are_window_means(tiny_hf_folder, tiny_registry):
    m = load_model("tiny_esm2", tiny_hf_folder, registry_file=tiny_registry)
    rng = np.random.default_rng(1)
    cav = CAV("x", 2, (v := rng.normal(size=32).astype(np.float32)) / np.linalg.norm(v), 0.1)
    prot = Protein("p", "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ")
    emb = ForwardEngine(m, [2])
    ((_, got),) = list(iter_sliding_window_scores(emb, [prot], {2: cav}, window=10, stride=4))
    starts = window_starts(len(prot.sequence), 10, 4)
    pieces = [Protein(f"w{s}", prot.sequence[s : s + 10]) for s in starts]
    win = [states for _, states in emb.iter_residue_states(pieces)]
    total, count = np.zeros(len(prot.sequence)), np.zeros(len(prot.sequence))
    for s, st in zip(starts, win, strict=True):
        total[s : s + 10] += cav.score_residues(st[2].mean(axis=0))
        count[s : s + 10] += 1
    assert np.allclose(got[2], total / count, atol=1e-5)
    ((_, one),) = list(iter_one_pass_scores(emb, [prot], {2: cav}))
    assert one[2].shape == (len(prot.sequence),)


# ---------------------------------------------------------------------- the stage


def test_detect_writes_every_output_and_finds_the_motif(trained):
    ctx = ctx_for(trained)
    summary = run_detect(ctx)
    out = Path(summary["output"])
    assert out.parent == ctx.out / "detections" / "tiny_esm2" / "test"
    assert out.name == f"L{summary['layer']}"
    for name in (
        "spans.gff3",
        "spans.tsv",
        "spans.interproscan.tsv",
        "scores.npy",
        "scores_index.json",
        "proteins.tsv",
        "summary.json",
    ):
        assert (out / name).is_file(), name
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folders
    # metrics: the planted motif is easy; every trained layer gets a row
    m = summary["metrics"]
    assert m["residue"]["f1"] > 0.8 and m["mean_iou"] > 0.6
    assert set(summary["per_layer"]) == {"1", "2", "3"}
    assert m["false_spans_per_kres"] is not None
    # GFF3 and TSV agree, coordinates 1-based inside the protein
    gff = [g for g in (out / "spans.gff3").read_text().splitlines() if not g.startswith("##s")]
    tsv = (out / "spans.tsv").read_text().splitlines()
    assert gff[0] == "##gff-version 3" and len(gff) - 1 == len(tsv) - 1 == summary["spans"] > 0
    index = json.loads((out / "scores_index.json").read_text())
    scores = np.load(out / "scores.npy", mmap_mode="r")
    assert scores.dtype == np.float32 and scores.shape == (index["total_residues"],)
    for g, t in zip(gff[1:], tsv[1:], strict=True):
        gc, tc = g.split("\t"), t.split("\t")
        assert gc[0] == tc[0] and gc[3:5] == tc[1:3]
        off, length = index["proteins"][tc[0]]
        start, end = int(tc[1]), int(tc[2])
        assert 1 <= start <= end <= length
        assert scores[off + start - 1 : off + end].mean() == pytest.approx(float(tc[4]), abs=1e-3)
    # heatmaps: top 2 + bottom 2 + 1 random (fewer if there are fewer proteins)
    n_pos = summary["metrics"]["positives"]
    assert len(summary["heatmaps"]) == min(5, n_pos)
    assert all((out / h).is_file() for h in summary["heatmaps"])
    saved = json.loads((out / "summary.json").read_text())
    assert saved["layer"] == summary["layer"] and saved["threshold"] == summary["threshold"]


def test_rerun_replaces_the_previous_result(trained):
    first = run_detect(ctx_for(trained))
    second = run_detect(ctx_for(trained, **{"detect.min_span_length": 1}))
    assert first["output"] == second["output"]
    assert second["spans"] >= first["spans"]
    saved = json.loads((Path(second["output"]) / "summary.json").read_text())
    assert saved["min_span_length"] == 1


def _store_files(ctx) -> set[str]:
    return {str(p.relative_to(ctx.store.root)) for p in ctx.store.root.rglob("*.npy")}


def test_detect_on_an_input_file_scores_it_without_growing_the_store(trained, tmp_path):
    fasta = tmp_path / "new.fasta"
    fasta.write_text(f">A\nMKLV{MOTIF}PQRSTVAD\n>B\nMKLVPQRSTVADEGIK\n")
    ctx = ctx_for(trained, **{"detect.layer": 1})
    before = _store_files(ctx)
    summary = run_detect(ctx, input_path=fasta)
    out = Path(summary["output"])
    assert out.parent.name.startswith("new-") and out.name == "L1"  # name + content hash
    assert summary["states_from"] == "forward pass" and summary["metrics"] is None
    assert _store_files(ctx) == before  # inputs are scored, never stored (store.keep_inputs)
    rows = (out / "spans.tsv").read_text().splitlines()[1:]
    hits = [r.split("\t") for r in rows if r.startswith("A\t")]
    assert hits and int(hits[0][1]) <= 6 and int(hits[0][2]) >= 14  # motif at 5..16

    # store.keep_inputs: the same file goes into the store once, then is read from it, and the
    # spans are those of the forward pass
    keep = ctx_for(trained, **{"detect.layer": 1, "store.keep_inputs": True})
    stored = run_detect(keep, input_path=fasta)
    assert stored["states_from"] == "store" and stored["embedded_now"] == 2
    assert _store_files(keep) > before
    again = run_detect(ctx_for(trained, **{"detect.layer": 1}), input_path=fasta)
    assert again["states_from"] == "store" and again["embedded_now"] == 0  # all stored: a read
    assert (Path(again["output"]) / "spans.tsv").read_text().splitlines()[1:] == rows


def test_held_out_spans_are_the_same_from_the_store_and_the_forward_pass(trained, tmp_path):
    """The held-out set is read from the store (float16 states); as an --input file against an
    empty store the same proteins are scored from the forward pass, rounded to the store's
    precision. The spans must not depend on where the states came from."""
    from esm_tcav.io.writers import write_fasta  # noqa: I001

    ctx = ctx_for(trained, **{"detect.layer": 1})
    held = run_detect(ctx)
    assert held["states_from"] == "store"
    positives, negatives = ctx.dataset.part("test")
    renamed = [Protein(f"again_{p.id}", p.sequence) for p in positives + negatives]
    fasta = tmp_path / "held_out_again.fasta"
    write_fasta(fasta, renamed)
    empty = str(tmp_path / "empty_store")  # same sequences, not stored there
    live = run_detect(ctx_for(trained, **{"detect.layer": 1, "store.path": empty}), fasta)
    assert live["states_from"] == "forward pass"

    def spans(summary, prefix=""):
        rows = (Path(summary["output"]) / "spans.tsv").read_text().splitlines()[1:]
        return sorted(r.split("\t")[:3] for r in rows if r.startswith(prefix))

    want = [[f"again_{i}", a, b] for i, a, b in spans(held)]
    assert want and spans(live) == sorted(want)


def test_sliding_window_mode_writes_its_own_folder(trained):
    one = run_detect(ctx_for(trained, **{"detect.layer": 1}))
    summary = run_detect(
        ctx_for(
            trained,
            **{
                "detect.mode": "sliding-window",
                "detect.layer": 1,
                "detect.window": 8,
                "detect.stride": 4,
            },
        )
    )
    out = Path(summary["output"])
    assert out.name == "L1-sliding" and summary["window"] == 8
    assert summary["states_from"] == "forward pass" and summary["smoothing_window"] == 1
    assert set(summary["per_layer"]) == {"1", "2", "3"}
    # its threshold is calibrated on its own scores (training proteins), not the registry's
    assert summary["threshold_source"].startswith("calibrated on the sliding-window scores")
    assert summary["threshold"] != one["threshold"] and summary["spans"] > 0
    assert one["threshold_source"].startswith("registry")
    # window scores blur the per-residue track (every window mixes motif and background) but
    # follow it
    a = np.load(Path(one["output"]) / "scores.npy")
    b = np.load(out / "scores.npy")
    assert np.corrcoef(a, b)[0, 1] > 0.5


# ---------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "text, message",
    [
        (">ok\nMKLVA\n>empty\n>ok2\nMKV\n", r"bad\.fasta.*empty.*empty sequence"),
        # a letter the reader takes but the model has no token for: caught before any output
        (">ok\nMKLVA\n>j1\nMKJV\n", r"bad\.fasta: record 'j1'.*'J'"),
    ],
)
def test_bad_input_is_one_clear_error_and_nothing_written(trained, tmp_path, text, message):
    ctx = ctx_for(trained)
    before = _listing(ctx.out / "detections")
    fasta = tmp_path / "bad.fasta"
    fasta.write_text(text)
    with pytest.raises(InputError, match=message):
        run_detect(ctx, input_path=fasta)
    assert _listing(ctx.out / "detections") == before


def test_a_version_trained_under_other_settings_is_never_used_silently(
    tmp_path, tiny_hf_folder, tiny_registry, caplog
):
    from esm_tcav.concepts.train import run_train

    cfg = _train(tmp_path, tiny_hf_folder, tiny_registry)  # v1 on the config as written
    with caplog.at_level("WARNING"):
        run_detect(ctx_for(cfg, **{"detect.layer": 1}))
    assert not [r for r in caplog.records if "changed since CAV version" in r.getMessage()]
    run_train(ctx_for(cfg, **{"train.n_random": 3}))  # a one-off experiment: v2
    caplog.clear()
    with caplog.at_level("WARNING"):
        summary = run_detect(ctx_for(cfg, **{"detect.layer": 1}))  # the plain config again
    assert summary["cav_version"] == 2
    said = [r.getMessage() for r in caplog.records if "changed since CAV version" in r.getMessage()]
    assert said and said[0].startswith("detect: config or data changed since CAV version v2")
    # back to the plain config: train reuses v1 (trained on it) and makes it current again
    again = run_train(ctx_for(cfg))
    assert again["reused"] and again["version"] == 1
    caplog.clear()
    with caplog.at_level("WARNING"):
        summary = run_detect(ctx_for(cfg, **{"detect.layer": 1}))
    assert summary["cav_version"] == 1
    assert not [r for r in caplog.records if "changed since CAV version" in r.getMessage()]


def test_an_untapped_detect_layer_says_so(trained):
    with pytest.raises(ConfigError, match=r"detect.layer 0 is not a tapped layer.*\[1, 2, 3\]"):
        run_detect(ctx_for(trained, **{"detect.layer": 0}))


def test_config_errors_blame_the_right_place(tmp_path, trained):
    typo = tmp_path / "typo.yaml"
    typo.write_text("dat:\n  positives: a.fasta\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: key 'dat': unknown key.*1 more: 'data'"):
        load_config(typo)
    with pytest.raises(ConfigError, match=r"^--set train.n_random='abc': .*integer"):
        load_config(trained, {"train.n_random": "abc"})
    with pytest.raises(ConfigError, match=r"^--set model.layers=7: .*list.*e\.g\. \[7\]"):
        load_config(trained, {"model.layers": 7})


def test_missing_threshold_method_is_refused(trained, monkeypatch):
    import esm_tcav.concepts.artifacts as artifacts

    real = artifacts.load_concept

    def without_method(*args, **kwargs):
        art = real(*args, **kwargs)
        art.thresholds = {
            **art.thresholds,
            "methods": {k: v for k, v in art.thresholds["methods"].items() if k != "fpr"},
        }
        return art

    monkeypatch.setattr(artifacts, "load_concept", without_method)
    ctx = ctx_for(trained, **{"thresholds.method": "fpr"})
    before = _listing(ctx.out / "detections")
    with pytest.raises(
        ArtifactError, match="no method 'fpr'; available: f1_max, precision_at_recall"
    ):
        run_detect(ctx)
    assert _listing(ctx.out / "detections") == before


def test_cav_of_another_model_is_refused(trained, tiny_mlm_folder):
    # same registry entry, other weights: the fingerprint differs
    ctx = ctx_for(trained, **{"model.path": str(tiny_mlm_folder)})
    before = _listing(ctx.out / "detections")
    with pytest.raises(ArtifactError, match="fingerprint"):
        run_detect(ctx)
    assert _listing(ctx.out / "detections") == before


def test_cav_of_another_hidden_size_is_refused(trained, monkeypatch):
    import esm_tcav.concepts.artifacts as artifacts

    real = artifacts.load_concept

    def other_size(*args, **kwargs):
        kwargs.pop("hidden_size", None)
        art = real(*args, **kwargs)
        art.cav = CAV(art.cav.concept, art.cav.layer, np.ones(16, np.float32) / 4, 0.0)
        return art

    monkeypatch.setattr(artifacts, "load_concept", other_size)
    ctx = ctx_for(trained)
    with pytest.raises(ArtifactError, match="hidden size 16 but model tiny_esm2 has 32"):
        run_detect(ctx)
