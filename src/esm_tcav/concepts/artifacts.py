"""Versioned, hash-checked CAV artifacts: `cavs/<model>/L{n}_concept_v{k}/` and friends.

Layout under a run's output folder (one version k per `train` run, shared by all its layers)::

    cavs/<model>/L{n}_concept_v{k}/   cav.safetensors, scaler.safetensors, pca.safetensors
                                      (when PCA was used), classifier.safetensors, report.json,
                                      thresholds.json, split.json, manifest.json
    cavs/<model>/L{n}_randoms_v{k}/   randoms.safetensors (all N random CAVs of the layer,
                                      stacked: `directions` [N, H], `biases` [N]),
                                      randoms.json (index, seed, held-out AUROC of each),
                                      manifest.json
    cavs/<model>/summary_v{k}.json    per layer: held-out AUROC, p, q, z, significant, controls,
                                      grade; best_layer (chosen on the training proteins)

`load_concept` reads one layer's folder into a `Concept` (the record a library holds too);
`cav.safetensors` is the one CAV file format (`CAV.save`), also that of a library's vector
files. Random CAV i of layer n, version k, is row i of `L{n}_randoms_v{k}/randoms.safetensors`
(one file instead of N folders: N reaches hundreds). Why versions never overwrite: results a user
has looked at (a report, a detection run) must stay reproducible from the files they came from.
Why manifests with sha256: a CAV is a few kilobytes that silently decide every detection call;
an edited or truncated file must be refused, not used. Everything is safetensors + JSON, no
pickle. Folders are written under a temporary name and renamed into place, so a killed run never
leaves a half-written version behind a valid name.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from pathlib import Path

import numpy as np

from esm_tcav._version import __version__
from esm_tcav.concepts.cav import CAV
from esm_tcav.concepts.concept import Concept
from esm_tcav.concepts.decoding import decoding_of
from esm_tcav.concepts.thresholds import get_threshold
from esm_tcav.errors import ArtifactError
from esm_tcav.io.files import atomic_write_json, load_tensors, read_json, save_tensors, sha256_file

MANIFEST = "manifest.json"
FORMAT = "esm-tcav-cav/1"
_VERSIONED = re.compile(r"^(?:L(?P<layer>\d+)_(?:concept|randoms)|summary)_v(?P<v>\d+)(?:\.json)?$")


# ---------------------------------------------------------------------- manifests


def write_manifest(folder: Path, info: dict) -> dict:
    """Hash every file in `folder` (except the manifest) into `manifest.json`; returns it."""
    folder = Path(folder)
    files = {}
    for path in sorted(folder.iterdir()):
        if path.name == MANIFEST or path.name.startswith("."):
            continue
        files[path.name] = {"size": path.stat().st_size, "sha256": sha256_file(path)}
    manifest = {"format": FORMAT, "package_version": __version__, **info, "files": files}
    atomic_write_json(folder / MANIFEST, manifest)
    return manifest


def verify_manifest(folder: Path) -> dict:
    """Check size and sha256 of every listed file; ArtifactError names the first bad file."""
    folder = Path(folder)
    manifest = read_json(folder / MANIFEST)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{folder / MANIFEST}: not an esm-tcav CAV manifest ({FORMAT})")
    for name, entry in manifest.get("files", {}).items():
        path = folder / name
        if not path.is_file():
            raise ArtifactError(f"{path}: listed in the manifest but missing; retrain")
        if path.stat().st_size != entry["size"] or sha256_file(path) != entry["sha256"]:
            raise ArtifactError(
                f"{path}: sha256 does not match its manifest (the file was changed after "
                "training); refusing to use it. Restore it or retrain with `esm-tcav train`"
            )
    return manifest


# ---------------------------------------------------------------------- versions and folders


def model_dir(out_dir: Path, model_name: str) -> Path:
    return Path(out_dir) / "cavs" / model_name


def concept_dir(out_dir: Path, model_name: str, layer: int, version: int) -> Path:
    return model_dir(out_dir, model_name) / f"L{layer}_concept_v{version}"


def randoms_dir(out_dir: Path, model_name: str, layer: int, version: int) -> Path:
    return model_dir(out_dir, model_name) / f"L{layer}_randoms_v{version}"


def summary_path(out_dir: Path, model_name: str, version: int) -> Path:
    return model_dir(out_dir, model_name) / f"summary_v{version}.json"


def _versions(out_dir: Path, model_name: str) -> list[tuple[int, int | None, str]]:
    root = model_dir(out_dir, model_name)
    found = []
    if root.is_dir():
        for p in root.iterdir():
            m = _VERSIONED.match(p.name)
            if m:
                layer = int(m.group("layer")) if m.group("layer") else None
                found.append((int(m.group("v")), layer, p.name))
    return found


CURRENT = "current.json"  # {"version": k}: the version `train` last produced or reused


def finished_versions(out_dir: Path, model_name: str, layer: int | None = None) -> set[int]:
    """Versions whose summary exists (written last, so it marks a finished run); with `layer`,
    those that have that layer's concept CAV."""
    found = _versions(out_dir, model_name)
    finished = {v for v, _, name in found if name.startswith("summary_")}
    if layer is not None:
        finished = {
            v for v, lay, name in found if v in finished and lay == layer and "_concept_" in name
        }
    return finished


def set_current(out_dir: Path, model_name: str, version: int) -> None:
    """Make `version` the one later stages use (train calls this after training or reusing)."""
    atomic_write_json(model_dir(out_dir, model_name) / CURRENT, {"version": int(version)})


def latest_version(out_dir: Path, model_name: str, layer: int | None = None) -> int | None:
    """The version later stages use: the one `train` last produced or reused (`CURRENT`: going
    back to a config after a one-off experiment reuses the version trained on it), else the
    newest finished one; with `layer`, the same among the versions that have that layer."""
    finished = finished_versions(out_dir, model_name, layer)
    try:
        current = int(read_json(model_dir(out_dir, model_name) / CURRENT)["version"])
    except (ArtifactError, ValueError, KeyError, TypeError):  # none yet, or unreadable
        current = None
    return current if current in finished else max(finished, default=None)


def next_version(out_dir: Path, model_name: str) -> int:
    """One above every version present in any form (even an unfinished run's): never reuse."""
    return max((v for v, _, _ in _versions(out_dir, model_name)), default=0) + 1


class ArtifactDir:
    """A folder written under a temporary name and renamed to its final name on `commit`."""

    def __init__(self, final: Path):
        self.final = Path(final)
        if self.final.exists():
            raise ArtifactError(f"{self.final}: already exists; versions are never overwritten")
        self.tmp = self.final.with_name(f".{self.final.name}.{uuid.uuid4().hex[:8]}.tmp")
        self.tmp.mkdir(parents=True)

    @classmethod
    def next_version(cls, out_dir: Path, model_name: str) -> int:
        return next_version(out_dir, model_name)

    def commit(self, info: dict) -> dict:
        manifest = write_manifest(self.tmp, info)
        if self.final.exists():
            self.discard()
            raise ArtifactError(
                f"{self.final}: appeared while writing; another run is using this output folder"
            )
        os.rename(self.tmp, self.final)
        return manifest

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------------- random CAVs on disk


def save_randoms(path: Path, randoms: list[CAV]) -> None:
    """All random CAVs of one layer in one safetensors file (row i = random CAV i)."""
    if randoms:
        dirs = np.stack([r.direction.astype(np.float32) for r in randoms])
        biases = np.array([r.bias for r in randoms], dtype=np.float64)
        concept, layer = randoms[0].concept, randoms[0].layer
    else:
        dirs, biases, concept, layer = np.zeros((0, 0), np.float32), np.zeros(0), "", -1
    save_tensors(
        path,
        {"directions": dirs, "biases": biases},
        {"concept": concept, "layer": layer, "count": len(randoms)},
    )


def load_randoms(path: Path, details: list[dict] | None = None) -> list[CAV]:
    tensors, meta = load_tensors(path)
    dirs, biases = tensors["directions"], tensors["biases"]
    details = details or [{} for _ in range(len(biases))]
    return [
        CAV(
            meta.get("concept", ""),
            int(meta.get("layer", -1)),
            dirs[i],
            float(biases[i]),
            dict(details[i]) if i < len(details) else {},
        )
        for i in range(len(biases))
    ]


# ---------------------------------------------------------------------- loading a concept


def load_concept(
    out_dir: Path,
    model_name: str,
    layer: int,
    version: int | None = None,
    fingerprint: str | None = None,
    hidden_size: int | None = None,
) -> Concept:
    """Load and verify (sha256 of every file, model fingerprint, hidden size) one layer's CAV.

    `version=None` takes the newest version that has this layer. Raises ArtifactError with the
    file or the mismatch named: an artifact that does not verify is never returned. The
    concept's threshold is the artifact's default method (`Concept.with_rule` picks another);
    its provenance is the verified manifest, its metrics the training report.
    """
    if version is None:
        version = latest_version(out_dir, model_name, layer)
        if version is None:
            raise ArtifactError(
                f"no trained CAV for model {model_name} layer {layer} under "
                f"{model_dir(out_dir, model_name)}; run `esm-tcav train` first"
            )
    folder = concept_dir(out_dir, model_name, layer, version)
    if not folder.is_dir():
        raise ArtifactError(
            f"{folder}: no such artifact (model {model_name}, layer {layer}, version {version})"
        )
    manifest = verify_manifest(folder)
    trained_fp = manifest.get("model_fingerprint")
    if fingerprint is not None and trained_fp != fingerprint:
        raise ArtifactError(
            f"CAV trained on model {manifest.get('model_name')} (fingerprint {trained_fp}), this "
            f"run uses fingerprint {fingerprint}; retrain for this model or use the model the CAV "
            f"was trained on ({folder})"
        )
    if manifest.get("layer") != layer or manifest.get("model_name") != model_name:
        raise ArtifactError(
            f"{folder / MANIFEST}: describes model {manifest.get('model_name')} "
            f"layer {manifest.get('layer')}, not {model_name} layer {layer}"
        )
    cav = CAV.load(folder / "cav.safetensors", meta={"version": version})
    expected = manifest.get("hidden_size")
    for what, size in (("its manifest", expected), ("this model", hidden_size)):
        if size is not None and cav.hidden_size != size:
            raise ArtifactError(
                f"{folder / 'cav.safetensors'}: CAV has hidden size {cav.hidden_size} but "
                f"{what} says {size}; it was trained on another model"
            )
    thresholds = read_json(folder / "thresholds.json")
    report = read_json(folder / "report.json")
    split = read_json(folder / "split.json") if (folder / "split.json").is_file() else {}
    randoms: list[CAV] = []
    rfolder = randoms_dir(out_dir, model_name, layer, version)
    if rfolder.is_dir():
        rman = verify_manifest(rfolder)
        if rman.get("model_fingerprint") != trained_fp:
            raise ArtifactError(f"{rfolder}: random CAVs belong to another model than {folder}")
        details = read_json(rfolder / "randoms.json").get("randoms", [])
        randoms = load_randoms(rfolder / "randoms.safetensors", details)
        if randoms and randoms[0].hidden_size != cav.hidden_size:
            raise ArtifactError(
                f"{rfolder / 'randoms.safetensors'}: hidden size "
                f"{randoms[0].hidden_size} differs from the concept CAV's "
                f"{cav.hidden_size}"
            )
    elif report.get("randoms", {}).get("n", 0):
        raise ArtifactError(f"{rfolder}: missing; the report lists random CAVs; retrain")
    method = thresholds.get("default_method", "f1_max")
    return Concept(
        cav,
        threshold=get_threshold(thresholds, method),
        threshold_method=method,
        **decoding_of(thresholds),
        version=version,
        metrics=report,
        provenance=manifest,
        path=folder,
        sha256=manifest["files"]["cav.safetensors"]["sha256"],
        randoms=randoms,
        thresholds=thresholds,
        split=split,
    )


def load_summary(out_dir: Path, model_name: str, version: int | None = None) -> dict:
    if version is None:
        version = latest_version(out_dir, model_name)
    if version is None:
        raise ArtifactError(
            f"no trained CAVs for model {model_name} under "
            f"{model_dir(out_dir, model_name)}; run `esm-tcav train` first"
        )
    return read_json(summary_path(out_dir, model_name, version))


SELECTION = (
    "highest mean cross-validated AUROC on the training proteins (in-sample training AUROC when "
    "there are too few proteins for CV); the test proteins never choose"
)


def select_layer(layers: dict[str, dict]) -> int | None:
    """The layer to report and detect at, chosen on training proteins only (`SELECTION`): the
    highest `cv_auroc_mean`, else the highest in-sample `train_auroc`; ties go to the lower
    layer. Held-out numbers are never read."""
    for key in ("cv_auroc_mean", "train_auroc"):
        scored = [
            (v[key], -int(k))
            for k, v in layers.items()
            if v.get(key) is not None and np.isfinite(v[key])
        ]
        if scored:
            return -max(scored)[1]
    return None


def best_layer(out_dir: Path, model_name: str) -> int:
    """The newest summary's best layer, chosen on the training proteins (`select_layer`)."""
    summary = load_summary(out_dir, model_name)
    best = summary.get("best_layer")
    if best is None:
        best = select_layer(summary.get("layers", {}))
    if best is None:
        raise ArtifactError(
            f"{summary_path(out_dir, model_name, summary['version'])}: no layer "
            "has a cross-validated or training AUROC"
        )
    return int(best)
