"""One formatter per kind of number, used everywhere in the report (and by the tests).

Registered as Jinja filters by `report.render`; each takes whatever the JSON held and returns
"n/a" (or "") for a missing or non-finite value, so a template never branches on None.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def num(x: Any) -> float | None:
    """`x` as a finite float, else None."""
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _or_na(x: Any, fmt: Callable[[float], str]) -> str:
    v = num(x)
    return "n/a" if v is None else fmt(v)


def fmt_auc(x: Any) -> str:
    """AUROC / AUPRC / IoU-like values in [0, 1]: three decimals."""
    return _or_na(x, lambda v: f"{v:.3f}")


def fmt_ci(ci: Any) -> str:
    """A [low, high] interval, e.g. "[0.951–0.988]"; "" when there is none."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return ""
    lo, hi = num(ci[0]), num(ci[1])
    if lo is None or hi is None:
        return ""
    return f"[{lo:.3f}–{hi:.3f}]"


def fmt_p(x: Any) -> str:
    """p and q values: two significant digits; below 0.001 as "2.0 × 10⁻⁶"."""
    v = num(x)
    if v is None:
        return "n/a"
    if v == 0:
        return "0"
    if v >= 0.001:
        return f"{v:.2g}"
    mant, exp = f"{v:.1e}".split("e")
    return f"{mant} × 10{str(int(exp)).translate(_SUPERSCRIPT)}"


def fmt_2(x: Any) -> str:
    """Precision, recall, F1, TCAV scores, z and t: two decimals."""
    return _or_na(x, lambda v: f"{v:.2f}")


def fmt_pct(x: Any) -> str:
    """A fraction in [0, 1] as a whole percentage, e.g. "87%"."""
    return _or_na(x, lambda v: f"{v * 100:.0f}%")


def fmt_threshold(x: Any) -> str:
    return _or_na(x, lambda v: f"{v:.4g}")


def fmt_int(x: Any) -> str:
    return _or_na(x, lambda v: f"{int(round(v)):,}")


def fmt_seconds(x: Any) -> str:
    return _or_na(x, lambda v: f"{v:.1f} s" if v < 60 else f"{int(v // 60)} min {v % 60:.0f} s")


def p_in_words(p: Any, n_random: Any) -> str:
    """ "beats all 20 random CAVs" / "3 of 20 random CAVs score as high or higher"."""
    pv, n = num(p), num(n_random)
    if pv is None or not n:
        return ""
    n = int(n)
    k = max(0, int(round(pv * (n + 1) - 1)))
    if k == 0:
        return f"beats all {n} random CAVs"
    return f"{k} of {n} random CAVs score as high or higher"


_RANDOM_MODES = {
    "label_shuffle": "the same examples with shuffled labels",
    "random_split": "two random draws of non-concept examples (as in the original TCAV)",
}


def random_mode_words(mode: Any) -> str:
    return _RANDOM_MODES.get(str(mode), str(mode or "shuffled labels"))


FILTERS = {
    f.__name__: f
    for f in (
        fmt_auc,
        fmt_ci,
        fmt_p,
        fmt_2,
        fmt_pct,
        fmt_threshold,
        fmt_int,
        fmt_seconds,
        random_mode_words,
    )
}
