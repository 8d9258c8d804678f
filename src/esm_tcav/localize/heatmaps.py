"""A few telling per-protein score tracks, not one picture per protein.

A reader learns most from the best and the worst cases and a few typical ones: the top and bottom
proteins by IoU (how well the predicted spans match the annotated domains) and a seeded random
draw from the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from esm_tcav.io.files import save_figure


def select_proteins(
    ious: dict[str, float | None], top: int = 5, n_random: int = 3, seed: int = 0
) -> list[tuple[str, str]]:
    """(protein id, reason) for the `top` best, `top` worst and `n_random` others by IoU.

    Proteins without an IoU (no annotated domain) are left out. Ties break by ID so the choice
    is reproducible; the random draw is seeded and never repeats a protein already chosen.
    """
    ranked = sorted(((v, k) for k, v in ious.items() if v is not None), key=lambda t: (-t[0], t[1]))
    ids = [k for _, k in ranked]
    chosen: list[tuple[str, str]] = [(pid, "top") for pid in ids[:top]]
    taken = {pid for pid, _ in chosen}
    bottom = [pid for pid in reversed(ids) if pid not in taken][:top]
    chosen += [(pid, "bottom") for pid in bottom]
    taken |= set(bottom)
    rest = [pid for pid in ids if pid not in taken]
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(rest), size=min(n_random, len(rest)), replace=False) if rest else []
    chosen += [(rest[i], "random") for i in sorted(int(i) for i in picks)]
    return chosen


def _bars(spans: Sequence[Any]) -> list[tuple[float, float]]:
    out = []
    for s in spans:
        start, end = (s.start, s.end) if hasattr(s, "start") else (s[0], s[1])
        out.append((start - 0.5, end - start + 1))
    return out


def plot_track(
    path: Path,
    protein_id: str,
    scores: np.ndarray,
    threshold: float,
    predicted: Sequence[Any],
    true: Sequence[Any],
    title: str = "",
) -> Path:
    """One PNG: the per-residue score, the threshold, predicted and annotated spans as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scores = np.asarray(scores, dtype=np.float32)
    x = np.arange(1, len(scores) + 1)
    width = float(np.clip(len(scores) / 60, 6, 16))
    fig, (ax, bars) = plt.subplots(
        2, 1, figsize=(width, 3.6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax.plot(x, scores, lw=0.9, color="#1f4e79", label="concept score")
    ax.fill_between(
        x,
        threshold,
        scores,
        where=scores >= threshold,
        color="#d62728",
        alpha=0.25,
        interpolate=True,
    )
    ax.axhline(threshold, ls="--", lw=0.8, color="#d62728", label=f"threshold {threshold:.3g}")
    ax.set_ylabel("score")
    ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), ncol=2, fontsize=7, frameon=False)
    ax.set_title(title or protein_id, fontsize=9, loc="left")
    bars.broken_barh(_bars(predicted), (1.1, 0.8), color="#d62728")
    bars.broken_barh(_bars(true), (0.1, 0.8), color="#2ca02c")
    bars.set_yticks([0.5, 1.5], ["annotated", "predicted"], fontsize=7)
    bars.set_ylim(0, 2)
    bars.set_xlim(0.5, len(scores) + 0.5)
    bars.set_xlabel("residue (1-based)")
    fig.tight_layout()
    path = Path(path)
    save_figure(fig, path, dpi=100)
    plt.close(fig)
    return path


def write_heatmaps(
    folder: Path,
    selection: list[tuple[str, str]],
    scores: dict[str, np.ndarray],
    threshold: float,
    predicted: dict[str, Sequence[Any]],
    true: dict[str, Sequence[Any]],
    ious: dict[str, float | None],
    label: str = "",
) -> list[str]:
    """Plot every selected protein into `folder`; returns the file names in selection order."""
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for rank, (pid, reason) in enumerate(selection, start=1):
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in pid)
        name = f"{rank:02d}_{reason}_{safe}.png"
        iou = ious.get(pid)
        title = f"{pid} ({reason}; mean IoU {iou:.2f}) {label}" if iou is not None else pid
        plot_track(
            folder / name,
            pid,
            scores[pid],
            threshold,
            predicted.get(pid, []),
            true.get(pid, []),
            title,
        )
        names.append(name)
    return names
