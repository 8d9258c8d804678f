"""A concept library: many trained concepts for one model, in one folder, checked on load.

"A pretrained model plus a light dictionary of CAVs annotates proteins": the library is that
dictionary. Layout::

    <library>/library.json                      the index (format esm-tcav-library/1)
    <library>/concepts/<name>_v<k>.safetensors  the concept vector, one file per version, in the
                                                one CAV format (`CAV.save`, the same layout as
                                                an artifact's cav.safetensors)
    <library>/work/<name>/                      the training run of each concept (configs,
                                                derived data files, CAVs, detections)
    <library>/work/embeddings/                  one embedding store shared by every concept
    <library>/concepts.tsv, report.md           the per-concept table (held-out metrics)

`library.json` = {"format", "model": {"name", "fingerprint", "hidden_size"}, "concepts": [{
"name", "layer", "threshold", "threshold_method", "smoothing_window", "min_span_length",
"merge_gap", "metrics": {...}, "provenance": {...}, "file", "sha256", "version", ...}]}.
The index is the only place a library keeps anything but vectors: an entry is a `Concept`'s
decision rule, metrics and provenance plus its file's path, sha256 and version. Every file is
written under a temporary name and renamed into place; a rebuild writes a new version and
never overwrites a concept file. Loading verifies every sha256 and, against the model in use,
the fingerprint and the hidden size.

Every setting that changes a scan's results is sealed too: an entry's `settings_sha256` covers
its name, layer, decision rule (threshold and method, smoothing window, minimum span length,
merge gap), vector file, vector sha256 and version, and the index's model (name, fingerprint,
hidden size). An entry edited by hand (a threshold set to -99) or without a seal is refused;
change settings by rebuilding or re-adding the concept. Metrics and provenance are descriptive
and not sealed (the library's q-values are recomputed in place when a concept is added).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from esm_tcav.concepts.cav import CAV
from esm_tcav.concepts.concept import RULE_FIELDS, Concept
from esm_tcav.config import check_concept_name
from esm_tcav.errors import ArtifactError, ConfigError, ModelMismatchError
from esm_tcav.io.files import atomic_write_json, atomic_write_text, content_hash, sha256_file

log = logging.getLogger("esm_tcav.concepts.library")

FORMAT = "esm-tcav-library/1"
INDEX = "library.json"
_VERSION_FILE = re.compile(r"^(?P<name>.+)_v(?P<v>\d+)\.safetensors$")


# ---------------------------------------------------------------------- the in-memory library

SETTINGS_FIELDS = ("name", "layer", *RULE_FIELDS, "file", "sha256", "version")
MODEL_FIELDS = ("name", "fingerprint", "hidden_size")


def settings_sha256(record: dict, model: dict) -> str:
    """The seal of an index entry: every field that changes results, and the library's model."""
    return content_hash(
        {
            "entry": {k: record.get(k) for k in SETTINGS_FIELDS},
            "model": {k: model.get(k) for k in MODEL_FIELDS},
        }
    )


def entry(concept: Concept, file: str) -> dict:
    """A concept's record in library.json: everything but the vector, which `file` holds."""
    return {
        "name": concept.name,
        "layer": concept.layer,
        **concept.rule(),
        "metrics": concept.metrics,
        "provenance": concept.provenance,
        "file": file,
        "sha256": concept.sha256,
        "version": concept.version,
    }


@dataclass
class Library:
    root: Path
    model: dict
    concepts: list[Concept]
    index_sha256: str

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.concepts]

    def concept(self, name: str) -> Concept:
        for c in self.concepts:
            if c.name == name:
                return c
        raise ConfigError(
            f"concept {name!r} is not in the library {self.root} "
            f"(it has {', '.join(self.names) or 'no concepts'})"
        )

    def check_model(self, loaded) -> None:
        """Refuse a model other than the one the library was trained on, with both named."""
        fp, want = loaded.fingerprint, self.model.get("fingerprint")
        if fp != want:
            raise ModelMismatchError(
                f"{self.root / INDEX}: the library was trained on model "
                f"{self.model.get('name')!r} (fingerprint {want}) but the loaded model "
                f"{loaded.spec.name!r} has fingerprint {fp}; scan with the library's model "
                "(--model-path to its checkpoint) or rebuild the library for this model"
            )
        hidden = loaded.spec.hidden_size
        if int(self.model.get("hidden_size", hidden)) != hidden:
            raise ModelMismatchError(
                f"{self.root / INDEX}: hidden size "
                f"{self.model.get('hidden_size')} but the model has {hidden}"
            )


def read_index(root: Path) -> dict:
    path = Path(root) / INDEX
    if not path.is_file():
        raise ArtifactError(
            f"{path}: not found; {root} is not a concept library (build one with "
            "`esm-tcav library build configs/library.yaml --out DIR`)"
        )
    try:
        doc = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable library index ({exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not an esm-tcav library index ({FORMAT})")
    return doc


def load_library(root: str | Path, names: Sequence[str] | None = None) -> Library:
    """Read library.json and every concept file, verifying each sha256 before use.

    `names` keeps only those concepts (in that order). An edited, truncated or missing concept
    file, or one whose vector size differs from the index's model, raises ArtifactError naming
    the file.
    """
    root = Path(root)
    doc = read_index(root)
    model = doc.get("model") or {}
    hidden = model.get("hidden_size")
    entries = doc.get("concepts") or []
    if names is not None:
        by_name = {e.get("name"): e for e in entries}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ConfigError(
                f"concept {missing[0]!r} is not in the library {root} (it has "
                f"{', '.join(by_name) or 'no concepts'})"
            )
        entries = [by_name[n] for n in names]
    concepts = []
    for e in entries:
        if e.get("settings_sha256") != settings_sha256(e, model):
            what = "has no settings seal" if "settings_sha256" not in e else "was edited"
            raise ArtifactError(
                f"{root / INDEX}: the entry of concept {e.get('name')!r} {what} (its "
                "settings_sha256 does not match its threshold, span settings, file or model); "
                "refusing to use it. Restore library.json, or rebuild the concept (`esm-tcav "
                "library build` / `library add`) to change its settings"
            )
        path = root / e["file"]
        if not path.is_file():
            raise ArtifactError(
                f"{path}: concept {e['name']!r} is listed in {INDEX} but its "
                "file is missing; restore it or rebuild the concept"
            )
        if sha256_file(path) != e.get("sha256"):
            raise ArtifactError(
                f"{path}: sha256 does not match {INDEX} (the file was changed after the library "
                "was built); refusing to use it. Restore it or rebuild the concept"
            )
        cav = CAV.load(path, meta={"version": int(e.get("version", 1))})
        if hidden is not None and cav.direction.shape != (int(hidden),):
            raise ArtifactError(
                f"{path}: vector of size {cav.direction.shape} but the library's "
                f"model has hidden size {hidden}"
            )
        if cav.layer != int(e["layer"]):
            raise ArtifactError(
                f"{path}: stored for layer {cav.layer} but {INDEX} says layer {e['layer']}"
            )
        cav.concept = e["name"]
        rule = {k: e[k] for k in RULE_FIELDS if k in e}
        rule["threshold"] = float(e["threshold"])
        concepts.append(
            Concept(
                cav,
                **rule,
                version=int(e.get("version", 1)),
                metrics=e.get("metrics") or {},
                provenance=e.get("provenance") or {},
                path=path,
                sha256=e["sha256"],
            )
        )
    return Library(root, model, concepts, sha256_file(root / INDEX))


def _next_version(root: Path, name: str) -> int:
    found = [
        int(m.group("v"))
        for p in (root / "concepts").glob(f"{name}_v*.safetensors")
        if (m := _VERSION_FILE.match(p.name)) and m.group("name") == name
    ]
    return max(found, default=0) + 1


def add_to_library(root: str | Path, model: dict, concept: Concept) -> Concept:
    """Write a concept's vector as a new version file and point the index at it (atomic writes).

    A new library gets `model`; an existing one must have the same fingerprint. Older version
    files stay on disk (results made with them remain reproducible); the index keeps their
    records under `previous_versions`.
    """
    root = Path(root)
    check_concept_name(concept.name)
    (root / "concepts").mkdir(parents=True, exist_ok=True)
    if (root / INDEX).is_file():
        doc = read_index(root)
        have = doc["model"].get("fingerprint")
        if have != model["fingerprint"]:
            raise ModelMismatchError(
                f"{root / INDEX}: library of model {doc['model'].get('name')!r} (fingerprint "
                f"{have}); concept {concept.name!r} was trained on {model.get('name')!r} "
                f"(fingerprint {model['fingerprint']}); use a separate library per model"
            )
    else:
        doc = {"format": FORMAT, "model": dict(model), "concepts": []}
    if concept.cav.hidden_size != int(doc["model"]["hidden_size"]):
        raise ArtifactError(
            f"concept {concept.name!r}: vector of size {concept.cav.hidden_size} but "
            f"the model has hidden size {doc['model']['hidden_size']}"
        )
    version = _next_version(root, concept.name)
    rel = f"concepts/{concept.name}_v{version}.safetensors"
    concept.cav.save(root / rel)
    concept.version, concept.path, concept.sha256 = version, root / rel, sha256_file(root / rel)
    kept, previous = [], []
    for e in doc["concepts"]:
        if e["name"] == concept.name:
            previous = e.pop("previous_versions", []) + [
                {k: e[k] for k in ("version", "file", "sha256", "layer", "threshold")}
            ]
        else:
            kept.append(e)
    record = entry(concept, rel)
    record["settings_sha256"] = settings_sha256(record, doc["model"])
    if previous:
        record["previous_versions"] = previous
    # keep the order of first addition; a rebuilt concept keeps its place
    order = [e["name"] for e in doc["concepts"]]
    kept.append(record)
    kept.sort(key=lambda e: order.index(e["name"]) if e["name"] in order else len(order))
    doc["concepts"] = kept
    atomic_write_json(root / INDEX, doc)
    write_table(root)
    return concept


# ---------------------------------------------------------------------- the per-concept table

TABLE_COLUMNS = [
    ("concept", "name"),
    ("layer", "layer"),
    ("threshold", "threshold"),
    ("residue F1", "residue_f1"),
    ("precision", "residue_precision"),
    ("recall", "residue_recall"),
    ("mean IoU", "mean_iou"),
    ("AUROC", "auroc"),
    ("p", "p"),
    ("q", "q"),
    ("significant", "significant"),
    ("grade", "grade"),
    ("test proteins (pos/neg)", "test_proteins"),
    ("HMM agreement F1", "hmm_residue_f1"),
]


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-3 and value != 0 else f"{value:.3f}"
    return str(value)


def table_rows(doc: dict) -> list[list[str]]:
    rows = []
    for e in doc["concepts"]:
        m = dict(e.get("metrics") or {})
        m.update({"name": e["name"], "layer": e["layer"], "threshold": e["threshold"]})
        if isinstance(m.get("grade"), dict):  # {"grade": label, "reasons": [...]}
            m["grade"] = m["grade"].get("grade")
        rows.append([_cell(m.get(key)) for _, key in TABLE_COLUMNS])
    return rows


def write_table(root: Path) -> None:
    """`concepts.tsv` and `report.md`: held-out residue F1, mean IoU, AUROC, p/q and the grade
    (concepts/grade.py) per concept."""
    doc = read_index(root)
    head = [h for h, _ in TABLE_COLUMNS]
    rows = table_rows(doc)
    atomic_write_text(root / "concepts.tsv", "\n".join("\t".join(r) for r in [head, *rows]) + "\n")
    lines = [
        f"# Concept library ({doc['model'].get('name')}, fingerprint "
        f"{doc['model'].get('fingerprint')})",
        "",
        "Held-out metrics of every concept: residue precision/recall/F1 and mean per-domain "
        "IoU of the detected spans on the test proteins (at the concept's threshold), "
        "AUROC of the CAV on held-out residues, p of the one-sided t-test of that AUROC against "
        "the random CAVs' AUROCs and the Benjamini-Hochberg q over every layer of every concept "
        "of the library; the grade (strong, usable, weak, "
        "not a concept) also asks that the layer beat the sequence-only and position controls.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "Provenance:", ""]
    for e in doc["concepts"]:
        prov = e.get("provenance") or {}
        bits = [
            prov.get("source", ""),
            f"License: {prov['license']}" if prov.get("license") else "",
            f"Split: {prov['split']}" if prov.get("split") else "",
        ]
        lines.append(
            f"- **{e['name']}** (v{e['version']}, layer {e['layer']}): "
            + " ".join(b for b in bits if b)
        )
    atomic_write_text(root / "report.md", "\n".join(lines) + "\n")
