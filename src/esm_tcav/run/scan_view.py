"""The new-protein view of a library scan: one section per concept (report/proteins_view.py).

A scan keeps spans and per-protein scores, not every residue's score (a proteome's worth would
dwarf the rest). The page ranks every protein from ``proteins.tsv``, takes the spans from
``scan.tsv`` as written, and re-scores only the proteins it draws (the top ones per concept and
those named with ``--show``) in one forward pass with the library's model, to draw their tracks.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from esm_tcav.concepts.library import load_library
from esm_tcav.engine.forward import ForwardEngine, Projection
from esm_tcav.io.readers import iter_fasta, iter_lines
from esm_tcav.localize.detect import smooth
from esm_tcav.localize.scan import load_scan_model
from esm_tcav.report.proteins_view import (
    TABLE_ROWS,
    TOP_TRACKS,
    VIEW_NAME,
    ConceptView,
    ProteinRow,
    Track,
    missing_named,
    pick_tracks,
    rank_rows,
    write_proteins_view,
)

__all__ = ["scan_view"]


def _rows(folder: Path, names: Sequence[str], keep: int, named: set[str]) -> tuple[dict, int]:
    """Per concept: the ``keep`` strongest rows and the named ones; and the protein count."""
    lines = iter_lines(folder / "proteins.tsv")
    header = next(lines).split("\t")
    col = {h: i for i, h in enumerate(header)}
    heaps: dict[str, list] = {n: [] for n in names}
    extra: dict[str, list[ProteinRow]] = {n: [] for n in names}
    total = 0
    for number, line in enumerate(lines):
        cells = line.split("\t")
        total += 1
        for name in names:
            mean_col = col.get(f"{name}:mean_score")
            row = ProteinRow(
                cells[0],
                int(cells[1]),
                int(cells[col[f"{name}:spans"]]),
                float(cells[col[f"{name}:max_score"]]),
                float(cells[mean_col]) if mean_col is not None and cells[mean_col] else None,
            )
            key = (row.max_score, row.mean_score or -np.inf, row.spans, -number)
            if len(heaps[name]) < keep:
                heapq.heappush(heaps[name], (key, row))
            elif key > heaps[name][0][0]:
                heapq.heapreplace(heaps[name], (key, row))
            if row.protein_id in named:
                extra[name].append(row)
    out = {}
    for name in names:
        top = [row for _, row in heaps[name]]
        ids = {r.protein_id for r in top}
        out[name] = rank_rows(top + [r for r in extra[name] if r.protein_id not in ids])
    return out, total


def _scanned(folder: Path) -> set[str]:
    """The concepts this scan scored: those with columns in ``proteins.tsv``."""
    header = next(iter_lines(folder / "proteins.tsv")).split("\t")
    return {h.removesuffix(":spans") for h in header if h.endswith(":spans")}


def _spans(folder: Path, wanted: set[str]) -> dict[tuple[str, str], list[tuple[int, int, float]]]:
    """(protein, concept) -> spans from scan.tsv, for the drawn proteins only."""
    found: dict[tuple[str, str], list[tuple[int, int, float]]] = {}
    lines = iter_lines(folder / "scan.tsv")
    next(lines)
    for line in lines:
        cells = line.split("\t")
        if cells[0] in wanted:
            span = (int(cells[1]), int(cells[2]), float(cells[4]))
            found.setdefault((cells[0], cells[5]), []).append(span)
    return found


def scan_view(
    out: str | Path,
    fasta: str | Path,
    library: str | Path,
    show: Sequence[str] | None = None,
    top: int = TOP_TRACKS,
    loaded=None,
    device: str = "cpu",
    dtype: str = "auto",
    model_path: str | Path | None = None,
) -> Path:
    """Write ``proteins.html`` into a finished scan folder ``out``; returns its path."""
    out = Path(out)
    lib = load_library(library)
    scanned = _scanned(out)  # weak concepts a scan left out have no columns: leave them out too
    lib.concepts = [c for c in lib.concepts if c.name in scanned]
    names = lib.names
    named = set(show or [])
    rows, total = _rows(out, names, max(TABLE_ROWS, top), named)
    draw = {name: pick_tracks(rows[name], show, top) for name in names}
    wanted = {pid for ids in draw.values() for pid in ids}
    proteins = [p for p in iter_fasta(fasta, check=False) if p.id in wanted]
    if loaded is None:
        loaded = load_scan_model(lib, device, dtype, model_path)
    else:
        lib.check_model(loaded)
    projection = Projection.from_cavs([c.cav for c in lib.concepts], loaded.spec.hidden_size)
    scores: dict[str, np.ndarray] = {}
    for i, s in ForwardEngine(loaded, projection=projection).score(proteins):
        scores[proteins[i].id] = s
    spans = _spans(out, wanted)
    missing = missing_named(show, scores)
    views = []
    for k, concept in enumerate(lib.concepts):
        tracks = [
            Track(
                pid,
                len(scores[pid]),
                smooth(scores[pid][:, k], concept.smoothing_window),
                tuple(spans.get((pid, concept.name), [])),
                pid in named,
            )
            for pid in draw[concept.name]
            if pid in scores
        ]
        views.append(
            ConceptView(
                concept.name,
                concept.layer,
                concept.threshold,
                concept.threshold_method,
                rows[concept.name],
                tracks,
                total,
                missing,
            )
        )
    facts = {
        "proteins": f"{total:,}",
        "input": str(fasta),
        "library": f"{library} ({len(names)} concepts)",
        "model": str(lib.model.get("name")),
    }
    files = [f for f in ("scan.gff3", "scan.tsv", "proteins.tsv", "summary.json")]
    title = (
        f"esm-tcav scan: {len(names)} concept{'s' if len(names) != 1 else ''} in {total:,} proteins"
    )
    return write_proteins_view(out / VIEW_NAME, title, views, facts, files)
