"""Figures of the evaluation: ROC/PR curves, AUROC by layer, concept vs random CAVs.

Matplotlib's object API with the Agg canvas (no pyplot state, no display needed), and every PNG
written through `io.files.save_figure` (atomic), so a reader never sees half a figure.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from esm_tcav.io.files import save_figure


def new_figure(width: float, height: float, ncols: int = 1):
    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    save_figure(fig, path)
    return Path(path)


def plot_roc_pr(curves: dict[int, dict], path: Path, title: str = "") -> Path:
    """ROC and precision-recall curves of the concept CAV, one line per layer.

    `curves[layer]` holds fpr, tpr, precision, recall (lists), auroc, auprc and prevalence.
    """
    fig, (ax_roc, ax_pr) = new_figure(10, 4.3, 2)
    prevalence = None
    for layer, c in sorted(curves.items()):
        ax_roc.plot(c["fpr"], c["tpr"], lw=1.6, label=f"L{layer} AUROC {c['auroc']:.3f}")
        ax_pr.plot(c["recall"], c["precision"], lw=1.6, label=f"L{layer} AUPRC {c['auprc']:.3f}")
        prevalence = c.get("prevalence", prevalence)
    ax_roc.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
    if prevalence is not None:
        ax_pr.axhline(prevalence, ls="--", color="grey", lw=1, label=f"chance ({prevalence:.2f})")
    ax_roc.set(
        xlabel="false-positive rate",
        ylabel="true-positive rate",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title="ROC (held-out proteins)",
    )
    ax_pr.set(
        xlabel="recall",
        ylabel="precision",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title="Precision-recall (held-out proteins)",
    )
    ax_roc.legend(loc="lower right", fontsize=8)
    ax_pr.legend(loc="lower left", fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_auroc_by_layer(
    layers: list[int],
    auroc: list[float],
    ci: list[list[float | None]],
    random_aurocs: list[list[float]],
    significant: list[bool],
    path: Path,
    title: str = "",
) -> Path:
    """Concept AUROC with its bootstrap interval per layer, over the random CAVs' AUROCs."""
    fig, ax = new_figure(6.5, 4.3)
    x = np.arange(len(layers))
    for xi, ra in zip(x, random_aurocs, strict=True):
        if len(ra):
            jitter = np.linspace(-0.12, 0.12, len(ra)) if len(ra) > 1 else np.zeros(1)
            ax.scatter(xi + jitter, ra, s=9, color="grey", alpha=0.6, zorder=2)
    ax.scatter([], [], s=9, color="grey", label="random CAVs")
    lo = [a - (c[0] if c[0] is not None else a) for a, c in zip(auroc, ci, strict=True)]
    hi = [(c[1] if c[1] is not None else a) - a for a, c in zip(auroc, ci, strict=True)]
    ax.errorbar(
        x,
        auroc,
        yerr=[lo, hi],
        fmt="o-",
        color="C0",
        capsize=4,
        lw=1.6,
        zorder=3,
        label="concept CAV (bootstrap CI)",
    )
    for xi, a, sig in zip(x, auroc, significant, strict=True):
        ax.annotate(
            "*" if sig else "n.s.",
            (xi, a),
            textcoords="offset points",
            xytext=(7, -12),
            fontsize=11 if sig else 8,
            color="C3" if sig else "grey",
        )
    ax.axhline(0.5, ls="--", color="grey", lw=1)
    ax.set_xticks(x, [f"L{n}" for n in layers])
    ax.set(
        xlabel="layer",
        ylabel="held-out AUROC",
        ylim=(0, 1.05),
        title=title or "Concept AUROC by layer",
    )
    ax.text(
        0.01,
        0.01,
        "* significant (BH q <= alpha); n.s. not significant",
        transform=ax.transAxes,
        fontsize=7,
        color="grey",
    )
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


def plot_random_comparison(
    layer: int, concept_auroc: float, random_aurocs: list[float], stats: dict, path: Path
) -> Path:
    """Histogram of the random CAVs' held-out AUROCs with the concept's marked."""
    fig, ax = new_figure(6, 4)
    ra = np.asarray(random_aurocs, dtype=float)
    if ra.size:
        ax.hist(
            ra,
            bins=min(30, max(5, ra.size // 2)),
            color="grey",
            alpha=0.7,
            label=f"{ra.size} random CAVs",
        )
    ax.axvline(concept_auroc, color="C3", lw=2, label=f"concept {concept_auroc:.3f}")
    p, q = stats.get("p"), stats.get("q")
    text = "no random CAVs"
    if p is not None:
        text = f"p = {p:.3g} (min {stats['min_p']:.3g})"
        if q is not None:
            text += f"\nq = {q:.3g}"
        text += "\nsignificant" if stats.get("significant") else "\nnot significant"
    ax.text(0.02, 0.97, text, transform=ax.transAxes, va="top", fontsize=9)
    ax.set(
        xlabel="held-out AUROC",
        ylabel="random CAVs",
        xlim=(0, 1.02),
        title=f"Layer {layer}: concept vs random CAVs",
    )
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(loc="upper center", fontsize=8)
    return _save(fig, path)
