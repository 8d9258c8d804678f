"""The view of new proteins: where is the concept in MY proteins? (`proteins.html`)

Written by ``esm-tcav detect --input`` (from the detect folder's files) and by ``esm-tcav scan``
(one section per concept of the library). Proteins are ranked by concept evidence: the highest
per-residue score, then the mean score, then the number of predicted spans. Score tracks (the
per-residue score, the threshold, the predicted spans) are drawn as inline SVG for the top
proteins and for every protein the user names (``--show ID,...``).

Self-contained like the report: no script, nothing loaded from the network, every value
autoescaped by Jinja. Scores are the concept's raw per-residue scores; when concepts carry a
calibrated probability (issue 11), ``ProteinRow.max_score``/``mean_score`` are where it goes.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from esm_tcav._version import __version__
from esm_tcav.io.files import atomic_write_text, read_json

__all__ = [
    "VIEW_NAME",
    "ProteinRow",
    "Track",
    "ConceptView",
    "rank_rows",
    "track_svg",
    "render_proteins_view",
    "write_proteins_view",
    "detect_view",
    "missing_named",
]

VIEW_NAME = "proteins.html"
TOP_TRACKS = 10  # score tracks drawn per concept (plus the named proteins)
log = logging.getLogger("esm_tcav.report.proteins_view")

TABLE_ROWS = 200  # ranked rows shown per concept; the TSV holds all


@dataclass(frozen=True)
class ProteinRow:
    """One protein's evidence for one concept."""

    protein_id: str
    length: int
    spans: int
    max_score: float
    mean_score: float | None = None


@dataclass(frozen=True)
class Track:
    """A protein's per-residue scores (None when not kept) and its predicted spans."""

    protein_id: str
    length: int
    scores: np.ndarray | None
    spans: tuple[tuple[int, int, float], ...]  # 1-based inclusive start, end, mean score
    named: bool = False  # asked for with --show


@dataclass
class ConceptView:
    """One concept's section: settings, ranked rows, tracks."""

    name: str
    layer: int | None
    threshold: float
    method: str | None
    rows: list[ProteinRow]  # ranked
    tracks: list[Track] = field(default_factory=list)
    total_proteins: int = 0
    missing_named: list[str] = field(default_factory=list)


def rank_rows(rows: Sequence[ProteinRow]) -> list[ProteinRow]:
    """Strongest evidence first: max score, then mean score, then spans; ties by ID."""
    return sorted(
        rows,
        key=lambda r: (
            -r.max_score,
            -(r.mean_score if r.mean_score is not None else -np.inf),
            -r.spans,
            r.protein_id,
        ),
    )


def track_svg(track: Track, threshold: float, width: int = 900, height: int = 120) -> str:
    """An inline SVG: score line (blue), threshold (dashed red), spans (red bars), ruler.

    Numbers only go into the markup (coordinates, residue numbers), never names, so the
    string is safe to mark up as is; the protein ID is written by the template (escaped).
    """
    pad_l, pad_r, top, plot_h, bar_y = 44, 8, 6, height - 46, height - 34
    n = max(track.length, 1)
    xs = np.linspace(pad_l, width - pad_r, n)

    def x_at(pos: float) -> float:  # residue pos (1-based) -> x of its centre
        return pad_l + (pos - 1) * (width - pad_l - pad_r) / max(n - 1, 1)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" class="track">'
    ]
    if track.scores is not None and len(track.scores):
        s = np.asarray(track.scores, dtype=float)
        lo = float(min(s.min(), threshold))
        hi = float(max(s.max(), threshold))
        span = hi - lo or 1.0

        def y_at(v: float) -> float:
            return top + (hi - v) / span * plot_h

        step = max(1, n // 1500)  # at most ~1,500 points per line
        pts = " ".join(f"{xs[i]:.1f},{y_at(s[i]):.1f}" for i in range(0, n, step))
        ty = y_at(threshold)
        parts += [
            f'<text x="{pad_l - 4}" y="{top + 8}" text-anchor="end" class="ax">{hi:.2f}</text>',
            f'<text x="{pad_l - 4}" y="{top + plot_h}" text-anchor="end" class="ax">'
            f"{lo:.2f}</text>",
            f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{ty:.1f}" y2="{ty:.1f}" '
            'stroke="#c0392b" stroke-dasharray="4 3" stroke-width="1"/>',
            f'<polyline fill="none" stroke="#1f4e79" stroke-width="1.2" points="{pts}"/>',
        ]
    else:
        parts.append(
            f'<text x="{pad_l}" y="{top + plot_h / 2:.0f}" class="ax">per-residue scores not '
            "kept for this protein</text>"
        )
    parts.append(
        f'<rect x="{pad_l}" y="{bar_y}" width="{width - pad_l - pad_r}" height="8" fill="#e6e9ed"/>'
    )
    for start, end, score in track.spans:
        x0, x1 = x_at(start - 0.5), x_at(end + 0.5)
        parts.append(
            f'<rect x="{x0:.1f}" y="{bar_y - 2}" width="{max(x1 - x0, 1.5):.1f}" height="12" '
            f'fill="#c0392b"><title>{start}-{end} (mean score {score:.3f})</title></rect>'
        )
    for tick in _ticks(n):
        x = x_at(tick)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{bar_y + 10}" y2="{bar_y + 14}" '
            'stroke="#5b6570"/>'
            f'<text x="{x:.1f}" y="{bar_y + 26}" text-anchor="middle" class="ax">{tick}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _ticks(n: int) -> list[int]:
    for step in (10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000):
        if n / step <= 10:
            break
    return [1] + list(range(step, n + 1, step))


def render_proteins_view(
    title: str, concepts: Sequence[ConceptView], facts: dict[str, str], files: Sequence[str]
) -> str:
    """The whole HTML document."""
    from markupsafe import Markup

    from esm_tcav.report.render import _env

    svgs = {
        (c.name, t.protein_id): Markup(track_svg(t, c.threshold))
        for c in concepts
        for t in c.tracks
    }
    return (
        _env()
        .get_template("proteins.html")
        .render(
            title=title,
            concepts=concepts,
            facts=facts,
            files=files,
            svgs=svgs,
            table_rows=TABLE_ROWS,
            generated=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            version=__version__,
        )
    )


def write_proteins_view(
    path: Path,
    title: str,
    concepts: Sequence[ConceptView],
    facts: dict[str, str],
    files: Sequence[str] = (),
) -> Path:
    """Write the page atomically; returns its path."""
    atomic_write_text(Path(path), render_proteins_view(title, concepts, facts, files))
    return Path(path)


def _named(show: Sequence[str] | None) -> list[str]:
    return [s for s in (show or []) if s]


def missing_named(show: Sequence[str] | None, present) -> list[str]:
    """The --show IDs not among the proteins, said on the console too (not only in the page)."""
    missing = [pid for pid in _named(show) if pid not in present]
    if missing:
        log.warning(
            "--show: %d ID%s not in the input: %s",
            len(missing),
            "" if len(missing) == 1 else "s",
            ", ".join(missing[:10]) + (" …" if len(missing) > 10 else ""),
        )
    return missing


def pick_tracks(ranked: Sequence[ProteinRow], show: Sequence[str] | None, top: int) -> list[str]:
    """IDs to draw: the ``top`` strongest, then the named ones not among them."""
    ids = [r.protein_id for r in ranked[:top]]
    return ids + [pid for pid in _named(show) if pid not in ids]


def detect_view(folder: Path, show: Sequence[str] | None = None, top: int = TOP_TRACKS) -> Path:
    """Write ``proteins.html`` into a detect output folder from its own files."""
    folder = Path(folder)
    summary = read_json(folder / "summary.json")
    index = json.loads((folder / "scores_index.json").read_text())["proteins"]
    scores = np.load(folder / "scores.npy", mmap_mode="r")
    spans: dict[str, list[tuple[int, int, float]]] = {}
    lines = (folder / "spans.tsv").read_text().splitlines()[1:]
    for line in lines:
        cells = line.split("\t")
        spans.setdefault(cells[0], []).append((int(cells[1]), int(cells[2]), float(cells[4])))
    rows = []
    for pid, (off, length) in index.items():
        s = scores[off : off + length]
        rows.append(
            ProteinRow(pid, length, len(spans.get(pid, [])), float(s.max()), float(s.mean()))
        )
    ranked = rank_rows(rows)
    wanted = pick_tracks(ranked, show, top)
    named = set(_named(show))
    tracks = [
        Track(
            pid,
            index[pid][1],
            np.asarray(scores[index[pid][0] : sum(index[pid])]),
            tuple(spans.get(pid, [])),
            pid in named,
        )
        for pid in wanted
        if pid in index
    ]
    view = ConceptView(
        summary.get("concept", "concept"),
        summary.get("layer"),
        float(summary.get("threshold", 0.0)),
        summary.get("threshold_method"),
        ranked,
        tracks,
        len(ranked),
        missing_named(show, index),
    )
    facts = {
        "proteins": f"{summary.get('proteins', len(ranked)):,}",
        "residues": f"{summary.get('residues', 0):,}",
        "model": str(summary.get("model")),
        "input": str(summary.get("set")),
        "mode": str(summary.get("mode")),
    }
    files = [f for f in summary.get("files", []) if (folder / f).is_file()]
    # an --input folder is "<name>-<12 hex of the file's sha256>": the title keeps the name
    set_name = re.sub(r"-[0-9a-f]{12}$", "", str(summary.get("set")))
    title = f"esm-tcav: {view.name} in {set_name} proteins"
    return write_proteins_view(folder / VIEW_NAME, title, [view], facts, files)
