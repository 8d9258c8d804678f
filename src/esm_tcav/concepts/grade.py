"""One grade per concept from held-out quality and the controls: the rule, in one place.

    strong        significant vs random CAVs at q < 0.01, held-out AUROC >= 0.90, beats both the
                  sequence-only baseline and the position control (bootstrap interval of the
                  AUROC difference above 0), and held-out residue F1 >= 0.60 (when spans exist)
    usable        significant at q < 0.05, held-out AUROC >= 0.80, beats both controls, and
                  held-out residue F1 >= 0.40 (when spans exist)
    not a concept not significant vs random CAVs (q >= 0.05), or beats neither control
    weak          everything else: real but not reliable enough to call spans on new proteins
                  unasked (`scan` leaves weak concepts out unless `--include-weak`)

A control that was not computed (e.g. trained before controls existed) counts as not beaten, so
an old concept can be at most "weak" until retrained. The test proteins only report: nothing
chosen during training (layer, threshold, decoding) looks at them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GRADES = ("strong", "usable", "weak", "not a concept")
WEAK = ("weak", "not a concept")  # left out of a scan unless asked for (--include-weak)
RULE = __doc__.split("\n\n")[1]


@dataclass(frozen=True)
class Grade:
    label: str
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"grade": self.label, "reasons": list(self.reasons)}

    @property
    def weak(self) -> bool:
        return self.label in WEAK


def grade(metrics: dict) -> Grade:
    """Grade from a flat record: `q`, `auroc` (held-out), `residue_f1` (held-out, at the stored
    threshold; None for whole-protein concepts) and `controls` ({"sequence": {"beaten": bool},
    "position": {...}}). See the module docstring for the rule."""
    q, auc, f1 = metrics.get("q"), metrics.get("auroc"), metrics.get("residue_f1")
    controls = metrics.get("controls") or {}
    beats = {n: bool((controls.get(n) or {}).get("beaten")) for n in ("sequence", "position")}
    reasons = []
    if q is None or not q < 0.05:
        return Grade("not a concept", [f"not significant vs random CAVs (q = {q})"])
    if not any(beats.values()):
        return Grade("not a concept", ["beats neither the sequence nor the position control"])
    for name, ok in beats.items():
        if not ok:
            reasons.append(f"does not beat the {name} control")
    auc = float("nan") if auc is None else auc
    if q < 0.01 and auc >= 0.90 and all(beats.values()) and (f1 is None or f1 >= 0.60):
        return Grade("strong", [f"q = {q:.2g}, AUROC {auc:.3f}, F1 {_f(f1)}, beats both controls"])
    if auc >= 0.80 and all(beats.values()) and (f1 is None or f1 >= 0.40):
        return Grade("usable", [f"q = {q:.2g}, AUROC {auc:.3f}, F1 {_f(f1)}, beats both controls"])
    if not auc >= 0.80:
        reasons.append(f"held-out AUROC {auc:.3f} < 0.80 (or missing)")
    if f1 is not None and f1 < 0.40:
        reasons.append(f"held-out residue F1 {f1:.3f} < 0.40")
    return Grade("weak", reasons)


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"
