"""Artifacts: atomic writers, manifests, versions, and refusal of tampered or foreign CAVs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from esm_tcav.concepts.artifacts import (
    ArtifactDir,
    best_layer,
    concept_dir,
    latest_version,
    load_concept,
    next_version,
    randoms_dir,
    verify_manifest,
    write_manifest,
)
from esm_tcav.concepts.cav import CAV
from esm_tcav.concepts.train import run_train
from esm_tcav.config import load_config
from esm_tcav.errors import ArtifactError
from esm_tcav.io.files import atomic_write_json
from esm_tcav.run.context import RunContext
from tests.test_train import planted_config


def test_atomic_json_is_strict_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a" / "x.json"
    atomic_write_json(
        path,
        {
            "nan": float("nan"),
            "inf": np.float32("inf"),
            "i": np.int64(3),
            "arr": np.arange(2),
            "ok": np.bool_(True),
        },
    )
    assert json.loads(path.read_text()) == {
        "nan": None,
        "inf": None,
        "i": 3,
        "arr": [0, 1],
        "ok": True,
    }
    assert [p.name for p in path.parent.iterdir()] == ["x.json"]


def test_manifest_round_trip_and_tamper(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "a.txt").write_text("hello")
    CAV("c", 2, np.ones(4, np.float32) / 2, 0.5).save(folder / "cav.safetensors")
    manifest = write_manifest(folder, {"layer": 2})
    assert set(manifest["files"]) == {"a.txt", "cav.safetensors"}
    assert verify_manifest(folder)["layer"] == 2
    (folder / "a.txt").write_text("hellO")  # same size, other content
    with pytest.raises(ArtifactError, match=r"a\.txt: sha256 does not match"):
        verify_manifest(folder)
    (folder / "a.txt").unlink()
    with pytest.raises(ArtifactError, match=r"a\.txt: listed in the manifest but missing"):
        verify_manifest(folder)


def test_versions_never_reuse_a_number(tmp_path):
    root = tmp_path / "cavs" / "m"
    assert next_version(tmp_path, "m") == 1 and latest_version(tmp_path, "m") is None
    d = ArtifactDir(concept_dir(tmp_path, "m", 2, 1))
    (d.tmp / "x").write_text("1")
    d.commit({"layer": 2})
    # an unfinished run (no summary) is not "latest" but still takes its number
    assert latest_version(tmp_path, "m") is None and next_version(tmp_path, "m") == 2
    (root / "summary_v1.json").write_text("{}")
    assert latest_version(tmp_path, "m") == 1 and latest_version(tmp_path, "m", layer=2) == 1
    assert latest_version(tmp_path, "m", layer=4) is None
    with pytest.raises(ArtifactError, match="already exists; versions are never overwritten"):
        ArtifactDir(concept_dir(tmp_path, "m", 2, 1))


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_hf_folder, tiny_registry):
    path = planted_config(tmp_path_factory.mktemp("art"), tiny_hf_folder, tiny_registry)
    ctx = RunContext(load_config(path))
    summary = run_train(ctx)
    return ctx, summary


def test_load_concept_verifies_and_returns_everything(run):
    ctx, summary = run
    art = load_concept(ctx.out, "tiny_esm2", 3, fingerprint=ctx.loaded.fingerprint, hidden_size=32)
    assert art.version == 1 and art.path == concept_dir(ctx.out, "tiny_esm2", 3, 1)
    assert art.cav.hidden_size == 32 and art.cav.layer == 3
    assert abs(np.linalg.norm(art.cav.direction) - 1) < 1e-5
    assert len(art.randoms) == 9 and all(r.hidden_size == 32 for r in art.randoms)
    assert art.randoms[4].meta["index"] == 4 and "auroc" in art.randoms[4].meta
    assert art.thresholds["layer"] == 3 and art.metrics["layer"] == 3
    assert art.provenance["model_fingerprint"] == ctx.loaded.fingerprint
    assert best_layer(ctx.out, "tiny_esm2") == summary["best_layer"]


def _copy_run(ctx, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(ctx.out / "cavs", dst / "cavs")
    return dst


def test_tampered_cav_is_refused_naming_the_file(run, tmp_path):
    ctx, _ = run
    out = _copy_run(ctx, tmp_path)
    path = concept_dir(out, "tiny_esm2", 1, 1) / "cav.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one bit of one weight
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"cav\.safetensors: sha256 does not match"):
        load_concept(out, "tiny_esm2", 1)
    load_concept(out, "tiny_esm2", 3)  # the other layer is intact


def test_tampered_random_cavs_are_refused(run, tmp_path):
    ctx, _ = run
    out = _copy_run(ctx, tmp_path)
    path = randoms_dir(out, "tiny_esm2", 3, 1) / "randoms.json"
    doc = json.loads(path.read_text())
    doc["randoms"][0]["auroc"] = 0.99
    path.write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match=r"randoms\.json: sha256 does not match"):
        load_concept(out, "tiny_esm2", 3)


def test_other_model_or_hidden_size_is_refused(run):
    ctx, _ = run
    with pytest.raises(
        ArtifactError,
        match=r"CAV trained on model tiny_esm2 \(fingerprint "
        rf"{ctx.loaded.fingerprint}\), this run uses fingerprint 0000",
    ):
        load_concept(ctx.out, "tiny_esm2", 1, fingerprint="0000")
    with pytest.raises(ArtifactError, match="CAV has hidden size 32 but this model says 320"):
        load_concept(ctx.out, "tiny_esm2", 1, hidden_size=320)
    with pytest.raises(ArtifactError, match="no trained CAV for model tiny_esm2 layer 2"):
        load_concept(ctx.out, "tiny_esm2", 2)


def test_manifest_hidden_size_mismatch_is_refused(run, tmp_path):
    """A CAV file swapped for another model's (consistently re-hashed) is still caught."""
    ctx, _ = run
    out = _copy_run(ctx, tmp_path)
    folder = concept_dir(out, "tiny_esm2", 1, 1)
    CAV("motif", 1, np.ones(320, np.float32) / np.sqrt(320), 0.0).save(folder / "cav.safetensors")
    manifest = json.loads((folder / "manifest.json").read_text())
    info = {k: v for k, v in manifest.items() if k not in ("files", "format", "package_version")}
    write_manifest(folder, info)
    with pytest.raises(ArtifactError, match="CAV has hidden size 320 but its manifest says 32"):
        load_concept(out, "tiny_esm2", 1)
