"""`esm-tcav run`: one config chains every step into one results folder; finished work is reused.

Runs the real stages on a tiny random ESM-2 (see conftest.py) and a planted-concept dataset: a
motif the model can see at every layer, annotated with a few flanking residues on each side so
the per-residue AUROC is high but not perfect.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from esm_tcav.cli import app

MOTIF = "CWHCWHCWHCWH"
FLANK = 3  # annotated residues on each side of the motif that the motif does not cover
BACKGROUND = list("ADEFGIKLMNPQRSTVY")  # no C, W, H: the motif's residues mark the concept


def write_planted_run(
    folder: Path,
    tiny_hf_folder: Path,
    tiny_registry: Path,
    n: int = 16,
    output_dir: str = "out",
    **sections,
) -> Path:
    """Positives (JSONL with spans) carrying MOTIF, negatives (FASTA) without it, a config.

    `sections` update config sections, e.g. train={"n_random": 19}. Returns the config path.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with (folder / "pos.jsonl").open("w") as fh:
        for i in range(n):
            length = int(rng.integers(50, 80))
            start = int(rng.integers(FLANK + 2, length - len(MOTIF) - FLANK - 2))
            seq = "".join(rng.choice(BACKGROUND, length))
            seq = seq[:start] + MOTIF + seq[start + len(MOTIF) :]
            span = {
                "motif_id": "m",
                "name": "planted",
                "start": start + 1 - FLANK,
                "end": start + len(MOTIF) + FLANK,
            }
            fh.write(
                json.dumps(
                    {"accession": f"P{i}", "sequence": seq, "ground_truth_annotations": [span]}
                )
                + "\n"
            )
    (folder / "neg.fasta").write_text(
        "".join(
            f">N{i}\n{''.join(rng.choice(BACKGROUND, int(rng.integers(50, 80))))}\n"
            for i in range(n)
        )
    )
    doc = {
        "output_dir": output_dir,
        "seed": 0,
        "model": {
            "name": "tiny_esm2",
            "path": str(tiny_hf_folder),
            "registry_file": str(tiny_registry),
            "layers": [1, 2, 3],
        },
        "embed": {"shard_proteins": 8},
        "data": {
            "concept": "planted_motif",
            "positives": "pos.jsonl",
            "negatives": "neg.fasta",
            "test_fraction": 0.3,
        },
        "train": {"n_random": 9, "pca_components": 16, "folds": 3},
        "evaluate": {"bootstrap": 50},
        "detect": {"heatmaps_top": 1, "heatmaps_random": 1, "min_span_length": 4},
        "tcav": {"max_proteins": 6},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            doc.setdefault(key, {}).update(value)
        else:
            doc[key] = value
    path = folder / "run.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def _sha(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def test_run_layout_reuse_and_force(tmp_path, tiny_hf_folder, tiny_registry):
    cfg = write_planted_run(tmp_path, tiny_hf_folder, tiny_registry)
    out = tmp_path / "out"

    first = _invoke("run", str(cfg), "--json")
    assert first.exit_code == 0, first.output
    timings = json.loads(first.stdout)
    assert list(timings["steps"]) == ["embed", "train", "evaluate", "detect", "tcav", "report"]
    for sub in ("embeddings", "cavs", "evaluations", "detections", "logs", "tcav"):
        assert (out / sub).is_dir(), sub
    for name in ("config.snapshot.yaml", "run_manifest.json", "report.html"):
        assert (out / name).is_file(), name
    model = out / "cavs" / "tiny_esm2"
    assert (model / "summary_v1.json").is_file()
    assert (out / "evaluations" / "tiny_esm2" / "projection_eval.json").is_file()
    assert (out / "detections" / "tiny_esm2" / "test" / "L3" / "spans.gff3").is_file()
    assert (out / "tcav" / "tiny_esm2" / "tcav_scores.json").is_file()
    snapshot = yaml.safe_load((out / "config.snapshot.yaml").read_text())
    assert snapshot["train"]["n_random"] == 9 and snapshot["data"]["concept"] == "planted_motif"
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["model"]["name"] == "tiny_esm2" and manifest["model"]["fingerprint"]
    assert set(manifest["data"]) == {"positives", "negatives"}
    assert manifest["steps"]["embed"]["result"]["embedded_now"] == 32
    v1 = {d.name: _sha(d) for d in model.iterdir() if d.is_dir()}
    v1["summary_v1.json"] = _sha(model)["summary_v1.json"]

    # a second run redoes nothing: embeddings come from the store, CAVs from version 1,
    # evaluation, detection and TCAV from their recorded runs (same config, CAVs and model)
    before = json.loads((out / "run_manifest.json").read_text())["steps"]
    second = _invoke("run", str(cfg))
    assert "layer 3:" in second.stdout and "report: " in second.stdout
    assert second.exit_code == 0, second.output
    manifest = json.loads((out / "run_manifest.json").read_text())
    for step in ("evaluate", "detect", "tcav"):
        assert manifest["steps"][step]["finished"] == before[step]["finished"], step
        assert manifest["steps"][step]["inputs_key"], step
    assert manifest["steps"]["embed"]["result"]["embedded_now"] == 0
    assert manifest["steps"]["embed"]["result"]["reused"] == 32
    assert manifest["steps"]["train"]["result"]["reused"] is True
    assert manifest["steps"]["train"]["result"]["version"] == 1
    assert not (model / "summary_v2.json").exists()
    assert not list(model.glob("*_v2"))

    # --force redoes the work into version 2 and leaves version 1 exactly as it was
    third = _invoke("run", str(cfg), "--force")
    assert third.exit_code == 0, third.output
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["steps"]["tcav"]["finished"] >= before["tcav"]["finished"]
    assert manifest["steps"]["detect"]["result"]["cav_version"] == 2
    assert manifest["steps"]["embed"]["result"]["embedded_now"] == 32
    assert manifest["steps"]["train"]["result"]["reused"] is False
    assert manifest["steps"]["train"]["result"]["version"] == 2
    assert (model / "summary_v2.json").is_file()
    assert {p.name for p in model.glob("L*_concept_v2")} == {f"L{n}_concept_v2" for n in (1, 2, 3)}
    for name, hashes in v1.items():
        now = _sha(model) if name == "summary_v1.json" else _sha(model / name)
        if name == "summary_v1.json":
            assert now[name] == hashes, name
        else:
            assert now == hashes, f"{name} changed after --force"
    evaluation = json.loads((out / "evaluations/tiny_esm2/projection_eval.json").read_text())
    assert evaluation["cav_version"] == 2
    assert "v2" in (out / "report.html").read_text()


def test_steps_option_runs_only_those_steps(tmp_path, tiny_hf_folder, tiny_registry):
    cfg = write_planted_run(tmp_path, tiny_hf_folder, tiny_registry)
    out = tmp_path / "out"
    res = _invoke("run", str(cfg), "--steps", "embed,train", "--json")
    assert res.exit_code == 0, res.output
    assert list(json.loads(res.stdout)["steps"]) == ["embed", "train"]
    assert (out / "embeddings").is_dir() and (out / "cavs" / "tiny_esm2").is_dir()
    for absent in ("evaluations", "detections", "tcav", "report.html"):
        assert not (out / absent).exists(), absent
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert set(manifest["steps"]) == {"embed", "train"}

    # the config's own `steps` list is honoured too, and a later step reuses the earlier ones
    cfg2 = write_planted_run(
        tmp_path, tiny_hf_folder, tiny_registry, steps=["embed", "train", "report"]
    )
    res = _invoke("run", str(cfg2), "--json")
    assert res.exit_code == 0, res.output
    assert list(json.loads(res.stdout)["steps"]) == ["embed", "train", "report"]
    assert (out / "report.html").is_file() and not (out / "evaluations").exists()
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["steps"]["train"]["result"]["reused"] is True


@pytest.mark.parametrize(
    ("section", "bad", "key", "words"),
    [
        ("train", {"n_randm": 5}, "train.n_randm", "unknown key"),
        ("train", {"n_random": "many"}, "train.n_random", "integer"),
        ("detect", {"layer": [1, 2]}, "detect.layer", "integer"),
        ("top", {"outptu_dir": "x"}, "outptu_dir", "unknown key"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(
    tmp_path, tiny_hf_folder, tiny_registry, section, bad, key, words
):
    if section == "top":
        cfg = write_planted_run(tmp_path, tiny_hf_folder, tiny_registry, **bad)
    else:
        cfg = write_planted_run(tmp_path, tiny_hf_folder, tiny_registry, **{section: bad})
    res = _invoke("run", str(cfg))
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: ") and f"key '{key}'" in lines[0], lines[0]
    assert words in lines[0]
    assert str(cfg) in lines[0]
    assert not (tmp_path / "out").exists()


def test_unknown_step_is_a_clear_error(tmp_path, tiny_hf_folder, tiny_registry):
    cfg = write_planted_run(tmp_path, tiny_hf_folder, tiny_registry)
    res = _invoke("run", str(cfg), "--steps", "embed,trian")
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "trian" in lines[0] and "embed, train" in lines[0], lines
    assert not (tmp_path / "out" / "embeddings").exists()
