"""The library as a map: cosine similarity between concept directions, per layer, clustered.

Which concepts does the model keep apart? Two concepts whose CAVs point the same way at a layer
are, for a linear read-out of that layer, one concept (e.g. a Pfam family and the TM helix it is
made of). The map uses every concept's CAV at every tapped layer (from its training run in
`<library>/work/<name>/`, the same version the library points at), orders concepts by average-
linkage clustering on 1 - cosine (the order of the layer the most concepts chose), and writes

    similarity.json   {"layers": {layer: {"concepts": [...], "cosine": [[...]]}}, "order": [...]}
    similarity.png    one clustered heatmap per layer

plus a section of report.md (the PNG and the most similar pairs per layer).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from esm_tcav.concepts.cav import CAV
from esm_tcav.concepts.library import read_index
from esm_tcav.io.files import atomic_write_text, save_figure
from esm_tcav.io.plots import new_figure

SECTION = "## Similarity map"


def _cav_path(entry: dict, model: str, layer: int) -> Path | None:
    m = entry.get("metrics") or {}
    run, version = m.get("run"), m.get("cav_version")
    if not run or version is None:
        return None
    path = Path(run) / "cavs" / model / f"L{layer}_concept_v{int(version)}" / "cav.safetensors"
    return path if path.is_file() else None


def concept_directions(root: Path) -> dict[int, dict[str, np.ndarray]]:
    """layer -> concept -> unit direction, for every layer where the concept's run has a CAV."""
    doc = read_index(root)
    model = doc["model"]["name"]
    out: dict[int, dict[str, np.ndarray]] = {}
    for e in doc["concepts"]:
        layers = {int(k) for k in ((e.get("metrics") or {}).get("auroc_by_layer") or {})}
        for layer in sorted(layers | {int(e["layer"])}):
            path = _cav_path(e, model, layer)
            if path is not None:
                d = CAV.load(path).direction.astype(np.float64)
                out.setdefault(layer, {})[e["name"]] = d / (np.linalg.norm(d) or 1.0)
    return out


def cluster_order(cos: np.ndarray) -> list[int]:
    """Leaf order of average-linkage clustering on 1 - cosine (identity for < 3 concepts)."""
    n = cos.shape[0]
    if n < 3:
        return list(range(n))
    from scipy.cluster.hierarchy import leaves_list, linkage
    from scipy.spatial.distance import squareform

    dist = np.clip(1.0 - cos, 0.0, 2.0)
    np.fill_diagonal(dist, 0.0)
    dist = (dist + dist.T) / 2
    return [int(i) for i in leaves_list(linkage(squareform(dist, checks=False), "average"))]


def similarity_map(root: str | Path) -> dict | None:
    """Write similarity.json/.png and the report.md section; None when < 2 concepts."""
    root = Path(root)
    doc = read_index(root)
    dirs = concept_directions(root)
    names_all = [e["name"] for e in doc["concepts"]]
    if len(names_all) < 2 or not dirs:
        return None
    chosen = Counter(int(e["layer"]) for e in doc["concepts"])
    ref = max(dirs, key=lambda layer: (chosen.get(layer, 0), len(dirs[layer]), -layer))
    ref_names = [n for n in names_all if n in dirs[ref]]
    ref_cos = np.array([[dirs[ref][a] @ dirs[ref][b] for b in ref_names] for a in ref_names])
    order = [ref_names[i] for i in cluster_order(ref_cos)]
    order += [n for n in names_all if n not in order]
    result: dict = {"order": order, "reference_layer": ref, "layers": {}}
    for layer in sorted(dirs):
        names = [n for n in order if n in dirs[layer]]
        cos = np.array([[float(dirs[layer][a] @ dirs[layer][b]) for b in names] for a in names])
        result["layers"][str(layer)] = {
            "concepts": names,
            "cosine": np.round(cos, 4).tolist(),
        }
    atomic_write_text(root / "similarity.json", json.dumps(result, indent=1) + "\n")
    _plot(result, root / "similarity.png")
    _report_section(root, result)
    return result


def _plot(result: dict, path: Path) -> None:
    layers = sorted(result["layers"], key=int)
    n = max(len(result["layers"][k]["concepts"]) for k in layers)
    size = min(3.5 + 0.22 * n, 14)
    fig, axes = new_figure(size * len(layers), size, len(layers))
    axes = np.atleast_1d(axes)
    for ax, key in zip(axes, layers, strict=True):
        names = result["layers"][key]["concepts"]
        cos = np.array(result["layers"][key]["cosine"])
        im = ax.imshow(cos, vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_title(f"layer {key}")
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
    fig.colorbar(im, ax=list(axes), shrink=0.7, label="cosine between concept directions")
    save_figure(fig, path, bbox_inches="tight")


def top_pairs(result: dict, layer: str, k: int = 5) -> list[tuple[str, str, float]]:
    names = result["layers"][layer]["concepts"]
    cos = np.array(result["layers"][layer]["cosine"])
    pairs = [
        (names[i], names[j], float(cos[i, j]))
        for i in range(len(names))
        for j in range(i + 1, len(names))
    ]
    return sorted(pairs, key=lambda t: -t[2])[:k]


def _report_section(root: Path, result: dict) -> None:
    path = root / "report.md"
    text = path.read_text() if path.is_file() else ""
    text = text.split(f"\n{SECTION}")[0].rstrip("\n") + "\n"
    lines = [
        "",
        SECTION,
        "",
        "Cosine similarity between the concept directions at each tapped layer (each concept's "
        "CAV of that layer, from its training run), concepts in average-linkage order (1 - "
        f"cosine, layer {result['reference_layer']}). Near 0: the model keeps the two apart; "
        "near 1: one direction reads both.",
        "",
        "![similarity map](similarity.png)",
        "",
    ]
    for layer in sorted(result["layers"], key=int):
        pairs = ", ".join(f"{a} / {b} {c:.2f}" for a, b, c in top_pairs(result, layer))
        lines.append(f"- layer {layer}, most similar pairs: {pairs or '-'}")
    atomic_write_text(path, text + "\n".join(lines) + "\n")
