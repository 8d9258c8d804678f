"""The concept library: build from a library config, versions, hash checks, `library add`.

Runs the real stages (train, evaluate, detect) on the tiny random ESM-2 with a planted motif
written in the three source formats a library config reads: a JSONL with spans (`data:`),
TMbed per-residue labels (`tmbed:`) and a PDNA sequence/label pair (`pdna:`).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from esm_tcav.cli import app
from esm_tcav.concepts.artifacts import load_concept
from esm_tcav.concepts.concept import Concept
from esm_tcav.concepts.grade import GRADES
from esm_tcav.concepts.library import INDEX, load_library
from esm_tcav.config import load_config, load_library_config
from esm_tcav.errors import ArtifactError, ConfigError, ModelMismatchError
from esm_tcav.io.files import load_tensors
from esm_tcav.localize.scan import run_scan
from esm_tcav.run.library_build import add_concept, build_library

MOTIF = "CWHCWHCWHCWH"
BACKGROUND = list("ADEFGIKLMNPQRSTVY")


def _motif_proteins(rng, n: int, prefix: str, with_motif: bool) -> list[tuple[str, str, tuple]]:
    out = []
    for i in range(n):
        length = int(rng.integers(50, 80))
        seq = "".join(rng.choice(BACKGROUND, length))
        span = ()
        if with_motif:
            a = int(rng.integers(3, length - len(MOTIF) - 3))
            seq = seq[:a] + MOTIF + seq[a + len(MOTIF) :]
            span = (a + 1, a + len(MOTIF))
        out.append((f"{prefix}{i}", seq, span))
    return out


def write_sources(folder: Path) -> None:
    """The planted motif as JSONL + FASTA, as TMbed files and as PDNA pairs."""
    rng = np.random.default_rng(0)
    pos = _motif_proteins(rng, 14, "P", True)
    neg = _motif_proteins(rng, 14, "N", False)
    (folder / "pos.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "accession": pid,
                    "sequence": seq,
                    "ground_truth_annotations": [{"start": s[0], "end": s[1], "name": "motif"}],
                }
            )
            + "\n"
            for pid, seq, s in pos
        )
    )
    (folder / "neg.fasta").write_text("".join(f">{pid}\n{seq}\n" for pid, seq, _ in neg))
    for part, sl in (("train", slice(0, 9)), ("test", slice(9, 14))):
        records = []
        for pid, seq, s in pos[sl] + neg[sl]:
            labels = ["1"] * len(seq)
            if s:
                labels[s[0] - 1 : s[1]] = "H" * (s[1] - s[0] + 1)
            records.append(f">{pid}|x\n{seq}\n{''.join(labels)}\n")
        (folder / f"tm_{part}.txt").write_text("".join(records))
        (folder / f"pdna_{part}_seq.fasta").write_text(
            "".join(f">{pid}\n{seq}\n" for pid, seq, _ in pos[sl])
        )
        (folder / f"pdna_{part}_lab.fasta").write_text(
            "".join(
                f">{pid}\n{' '.join(str(i) for i in range(s[0], s[1] + 1))}\n"
                for pid, _, s in pos[sl]
            )
        )


def model_section(tiny_hf_folder: Path, tiny_registry: Path) -> dict:
    return {
        "name": "tiny_esm2",
        "path": str(tiny_hf_folder),
        "registry_file": str(tiny_registry),
        "layers": [1, 2, 3],
    }


DEFAULTS = {
    "embed": {"residue_dtype": "float32"},
    "train": {"n_random": 9, "pca_components": 16, "folds": 3, "residue_cap": 2000},
    "evaluate": {"bootstrap": 20},
    "detect": {"heatmaps_top": 0, "heatmaps_random": 0, "min_span_length": 4, "merge_gap": 1},
}


def write_library_config(folder: Path, tiny_hf_folder: Path, tiny_registry: Path) -> Path:
    write_sources(folder)
    doc = {
        "seed": 0,
        "model": model_section(tiny_hf_folder, tiny_registry),
        "defaults": DEFAULTS,
        "concepts": [
            {
                "name": "motif",
                "data": {"positives": "pos.jsonl", "negatives": "neg.fasta", "test_fraction": 0.35},
                "provenance": {"source": "planted", "license": "CC0"},
            },
            {
                "name": "tm_motif",
                "tmbed": {
                    "train": "tm_train.txt",
                    "test": "tm_test.txt",
                    "label": "transmembrane_helix",
                },
                "max_train": 8,
                "detect": {"smoothing_window": 3},
            },
            {
                "name": "bind_motif",
                "pdna": {
                    "train_sequences": "pdna_train_seq.fasta",
                    "train_labels": "pdna_train_lab.fasta",
                    "test_sequences": "pdna_test_seq.fasta",
                    "test_labels": "pdna_test_lab.fasta",
                    "negatives": "neg.fasta",
                },
            },
        ],
    }
    path = folder / "library.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_hf_folder, tiny_registry):
    folder = tmp_path_factory.mktemp("library")
    cfg = write_library_config(folder, tiny_hf_folder, tiny_registry)
    result = build_library(cfg, folder / "lib")
    return {"folder": folder, "config": cfg, "lib": folder / "lib", "result": result}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_writes_index_vectors_and_table(built):
    lib = built["lib"]
    doc = json.loads((lib / INDEX).read_text())
    assert doc["format"] == "esm-tcav-library/1"
    assert doc["model"]["name"] == "tiny_esm2" and len(doc["model"]["fingerprint"]) == 16
    assert doc["model"]["hidden_size"] == 32
    assert [e["name"] for e in doc["concepts"]] == ["motif", "tm_motif", "bind_motif"]
    for e in doc["concepts"]:
        assert e["file"] == f"concepts/{e['name']}_v1.safetensors"
        assert _sha(lib / e["file"]) == e["sha256"]
        # one CAV file format: the library's file holds what the run's cav.safetensors holds
        run_cav = lib / "work" / e["name"] / "cavs" / "tiny_esm2"
        ours, theirs = (
            load_tensors(path)
            for path in (lib / e["file"], run_cav / f"L{e['layer']}_concept_v1/cav.safetensors")
        )
        assert ours[1] == theirs[1] and set(ours[0]) == set(theirs[0]) == {"direction", "bias"}
        assert all(np.array_equal(ours[0][k], theirs[0][k]) for k in ours[0])
        umask = os.umask(0)
        os.umask(umask)
        assert (lib / e["file"]).stat().st_mode & 0o777 == 0o666 & ~umask  # not safetensors' 0600
        assert e["layer"] in (1, 2, 3) and e["threshold_method"] == "f1_max"
        # graded from held-out quality and the controls, calibrated on out-of-fold scores
        m = e["metrics"]
        assert m["grade"] in ("strong", "usable", "weak", "not a concept") and m["grade_reasons"]
        assert set(m["controls"]) == {"sequence", "position"}
        assert m["calibration"]["fitted_on"].startswith("out-of-fold")
        assert m["threshold_calibrated_on"].startswith("out-of-fold")
        m = e["metrics"]
        for key in ("residue_f1", "mean_iou", "auroc", "auroc_ci", "p", "q", "significant"):
            assert key in m, (e["name"], key)
        assert m["auroc"] > 0.9 and m["residue_f1"] > 0.5, (e["name"], m)
        assert m["q_tests"] == 9  # BH across 3 layers x 3 concepts
        assert set(e["provenance"]["files"]) >= {"positives", "negatives"}
    assert doc["concepts"][0]["provenance"]["license"] == "CC0"
    assert doc["concepts"][1]["smoothing_window"] == 3
    # the tmbed concept: capped, derived files in the work folder, 1-based spans kept
    tm = doc["concepts"][1]["provenance"]["counts"]
    assert tm["train"] == {"positives": 8, "negatives": 8} and tm["test"]["positives"] == 5
    derived = built["lib"] / "work" / "tm_motif" / "data" / "test_positives.jsonl"
    first = json.loads(derived.read_text().splitlines()[0])
    span = first["ground_truth_annotations"][0]
    assert first["sequence"][span["start"] - 1 : span["end"]] == MOTIF
    table = (lib / "report.md").read_text()
    assert "| motif |" in table and "residue F1" in table and "mean IoU" in table
    # each concept's grade in its row, under the grade column
    head = next(ln for ln in table.splitlines() if ln.startswith("| concept |")).split(" | ")
    at = head.index("grade")
    for e in doc["concepts"]:
        row = next(ln for ln in table.splitlines() if ln.startswith(f"| {e['name']} |"))
        assert e["metrics"]["grade"] in GRADES and row.split(" | ")[at] == e["metrics"]["grade"]
    assert len((lib / "concepts.tsv").read_text().splitlines()) == 4
    # one embedding store shared by the concepts
    assert (lib / "work" / "embeddings").is_dir()
    assert not (lib / "work" / "motif" / "embeddings").exists()


def test_scan_with_the_library_calls_the_spans_detect_calls(built, tmp_path):
    """Scan (one matrix product, fresh forward) and detect (stored states) agree exactly."""
    lib = load_library(built["lib"])
    entry = lib.concept("motif")
    det = Path(entry.metrics["detections"])
    test = json.loads((built["lib"] / "work" / "motif" / "split.json").read_text())["test"]
    proteins = {}
    for line in (built["folder"] / "pos.jsonl").read_text().splitlines():
        rec = json.loads(line)
        proteins[rec["accession"]] = rec["sequence"]
    for block in (built["folder"] / "neg.fasta").read_text().split(">")[1:]:
        pid, seq = block.split("\n")[:2]
        proteins[pid] = seq
    ids = test["positives"] + test["negatives"]
    fasta = tmp_path / "test.fasta"
    fasta.write_text("".join(f">{i}\n{proteins[i]}\n" for i in ids))
    # the tiny random model's concepts are graded weak: scan leaves them out unless asked
    assert entry.grade in ("strong", "usable", "weak", "not a concept")
    if entry.grade in ("weak", "not a concept"):
        with pytest.raises(ConfigError, match="--include-weak"):
            run_scan(fasta, built["lib"], tmp_path / "refused", progress=False)
    run_scan(fasta, built["lib"], tmp_path / "scan", progress=False, include_weak=True)
    want = sorted(
        tuple(r.split("\t")[:3]) for r in (det / "spans.tsv").read_text().splitlines()[1:]
    )
    got = sorted(
        tuple(r.split("\t")[:3])
        for r in (tmp_path / "scan" / "scan.tsv").read_text().splitlines()[1:]
        if r.split("\t")[5] == "motif"
    )
    assert got == want and want


def test_rebuild_writes_new_versions_and_keeps_old_files(built):
    lib = built["lib"]
    before = {p.name: _sha(p) for p in (lib / "concepts").iterdir()}
    build_library(built["config"], lib)
    doc = json.loads((lib / INDEX).read_text())
    assert [e["version"] for e in doc["concepts"]] == [2, 2, 2]
    assert all(e["previous_versions"][0]["version"] == 1 for e in doc["concepts"])
    after = {p.name: _sha(p) for p in (lib / "concepts").iterdir()}
    for name, sha in before.items():
        assert after[name] == sha, f"{name} was overwritten"
    assert len(after) == 2 * len(before)
    loaded = load_library(lib)
    assert [c.version for c in loaded.concepts] == [2, 2, 2]
    # the same record a run's artifact loads into
    motif = loaded.concept("motif")
    assert isinstance(motif, Concept) and motif.path == lib / "concepts" / "motif_v2.safetensors"
    run = load_concept(lib / "work" / "motif", "tiny_esm2", motif.layer)
    assert np.array_equal(run.cav.direction, motif.cav.direction)
    assert motif.threshold == run.threshold and motif.min_span_length == 4


def test_tampered_or_missing_concept_file_is_refused(built, tmp_path):
    import shutil

    lib = tmp_path / "lib"
    shutil.copytree(built["lib"], lib, ignore=shutil.ignore_patterns("work"))
    entry = json.loads((lib / INDEX).read_text())["concepts"][0]
    path = lib / entry["file"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="sha256 does not match"):
        load_library(lib)
    path.unlink()
    with pytest.raises(ArtifactError, match="file is missing"):
        load_library(lib)
    with pytest.raises(ArtifactError, match="not a concept library"):
        load_library(tmp_path / "nothing")


def test_add_concept_from_a_run_config(
    built, tmp_path, tiny_hf_folder, tiny_registry, tiny_mlm_folder
):
    import shutil

    lib = tmp_path / "lib"
    shutil.copytree(built["lib"], lib)
    run = {
        "seed": 0,
        "model": model_section(tiny_hf_folder, tiny_registry),
        "data": {
            "concept": "user_motif",
            "positives": str(built["folder"] / "pos.jsonl"),
            "negatives": str(built["folder"] / "neg.fasta"),
        },
        **DEFAULTS,
    }
    path = tmp_path / "user.yaml"
    path.write_text(yaml.safe_dump(run))
    result = CliRunner().invoke(app, ["library", "add", str(lib), str(path)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["concept"] == "user_motif" and out["version"] == 1
    doc = json.loads((lib / INDEX).read_text())
    assert doc["concepts"][-1]["name"] == "user_motif"
    assert all(e["metrics"]["q_tests"] == 12 for e in doc["concepts"])  # q over 4 concepts now
    assert "user_motif" in (lib / "report.md").read_text()

    other = dict(run, model={**run["model"], "path": str(tiny_mlm_folder)})
    other["data"] = {**run["data"], "concept": "other"}
    path.write_text(yaml.safe_dump(other))
    with pytest.raises(ModelMismatchError, match="fingerprint"):
        add_concept(lib, load_config(path))
    assert not (lib / "work" / "other" / "cavs").exists()  # refused before training


def test_library_config_errors_name_the_key(tmp_path):
    path = tmp_path / "lib.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "concepts": [
                    {
                        "name": "a",
                        "data": {},
                        "tmbed": {"train": "x", "test": "y", "label": "signal_peptide"},
                    }
                ]
            }
        )
    )
    with pytest.raises(ConfigError, match="exactly one of data, tmbed or pdna"):
        load_library_config(path)
    path.write_text(yaml.safe_dump({"concepts": [{"name": "bad name", "data": {}}]}))
    with pytest.raises(ConfigError, match="concept name"):
        load_library_config(path)
    path.write_text(yaml.safe_dump({"concepts": [{"name": "a", "data": {}, "colour": 1}]}))
    with pytest.raises(ConfigError, match="concepts.0.colour"):
        load_library_config(path)


def test_a_typo_in_a_concepts_run_sections_writes_nothing(tmp_path, tiny_hf_folder, tiny_registry):
    path = write_library_config(tmp_path, tiny_hf_folder, tiny_registry)
    doc = yaml.safe_load(path.read_text())
    doc["defaults"]["train"]["residue_capp"] = 3
    path.write_text(yaml.safe_dump(doc))
    res = CliRunner().invoke(app, ["library", "build", str(path), "--out", str(tmp_path / "lib")])
    assert res.exit_code == 2
    line = res.stderr.strip().splitlines()[-1]
    assert "lib" in line and "train.residue_capp" in line and "unknown key" in line
    assert not (tmp_path / "lib").exists()


def test_shipped_library_config_is_valid():
    root = Path(__file__).resolve().parents[1]
    spec = load_library_config(root / "configs" / "library.yaml")
    assert [c.name for c in spec.concepts] == [
        "C2H2_zinc_finger",
        "transmembrane_helix",
        "signal_peptide",
        "dna_binding",
    ]
    for c in spec.concepts:
        for src in (c.tmbed, c.pdna):
            for key, value in src.model_dump().items() if src else []:
                if key != "label" and isinstance(value, str):
                    assert (root / "configs" / value).is_file(), value


def test_cli_build_and_scan(built, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a relative --out: derived data paths must still resolve
    result = CliRunner().invoke(app, ["library", "build", str(built["config"]), "--out", "lib"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert set(summary["concepts"]) == {"motif", "tm_motif", "bind_motif"}
    fasta = built["folder"] / "neg.fasta"
    args = ["scan", str(fasta), "--library", str(tmp_path / "lib"), "--out"]
    # every concept of the tiny random model is graded weak: refused unless --include-weak
    refused = CliRunner().invoke(app, [*args, str(tmp_path / "refused")])
    assert refused.exit_code != 0 and "--include-weak" in refused.output
    result = CliRunner().invoke(
        app, [*args, str(tmp_path / "scan"), "--shard", "1/2", "--include-weak"]
    )
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(
        app,
        [
            "scan",
            str(fasta),
            "--library",
            str(tmp_path / "lib"),
            "--out",
            str(tmp_path / "scan"),
            "--merge",
            "2",
        ],
    )
    assert result.exit_code == 2 and "shard not finished" in result.output
