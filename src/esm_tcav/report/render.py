"""`esm-tcav report`: the one self-contained `report.html` a biologist reads first.

It reads what the other stages left in the results folder and writes no numbers of its own:

- `cavs/<model>/summary_v{k}.json` (newest finished version) and, per layer,
  `L{n}_concept_v{k}/{report,thresholds,manifest}.json`           ← `train`
- `evaluations/<model>/projection_eval.json` and its PNGs          ← `evaluate`
- `detections/<model>/<set>/L{n}/summary.json` and `heatmaps/*.png` ← `detect`
- `tcav/<model>/tcav_scores.json` and `tcav_scores.png`             ← `tcav`
- `run_manifest.json` and `config.snapshot.yaml`                    ← every stage

Sections: the verdict in words, per-layer AUROC with intervals and random baselines, thresholds,
detection metrics with heatmaps, TCAV scores, provenance. A stage that has not run (or whose
files cannot be read) is shown as "not run" (or with the reading error); it never stops the
report. Figures are inlined as base64 PNG, there is no script and nothing loads from the network,
so the file can be mailed or archived as it is. Every value taken from data is HTML-escaped.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import os
import time
from importlib import resources
from pathlib import Path
from string import Template
from typing import Any

import yaml

from esm_tcav._version import __version__

log = logging.getLogger("esm_tcav.report.render")

REPORT_NAME = "report.html"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


# ---------------------------------------------------------------------- number formatting
# One formatter per kind of number, used everywhere (and by the tests, to find the numbers).


def _num(x: Any) -> float | None:
    try:
        value = float(x)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def fmt_auc(x: Any) -> str:
    """AUROC / AUPRC / IoU-like values in [0, 1]: three decimals."""
    v = _num(x)
    return "n/a" if v is None else f"{v:.3f}"


def fmt_ci(ci: Any) -> str:
    """A [low, high] interval, e.g. "[0.951–0.988]"; "" when there is none."""
    if not isinstance(ci, (list, tuple)) or len(ci) != 2:
        return ""
    lo, hi = _num(ci[0]), _num(ci[1])
    if lo is None or hi is None:
        return ""
    return f"[{lo:.3f}–{hi:.3f}]"


def fmt_p(x: Any) -> str:
    """p and q values: two significant digits; below 0.001 as "2.0 × 10⁻⁶"."""
    v = _num(x)
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
    v = _num(x)
    return "n/a" if v is None else f"{v:.2f}"


def fmt_pct(x: Any) -> str:
    """A fraction in [0, 1] as a whole percentage, e.g. "87%"."""
    v = _num(x)
    return "n/a" if v is None else f"{v * 100:.0f}%"


def fmt_threshold(x: Any) -> str:
    v = _num(x)
    return "n/a" if v is None else f"{v:.4g}"


def fmt_int(x: Any) -> str:
    v = _num(x)
    return "n/a" if v is None else f"{int(round(v)):,}"


def fmt_seconds(x: Any) -> str:
    v = _num(x)
    if v is None:
        return "n/a"
    if v < 60:
        return f"{v:.1f} s"
    return f"{int(v // 60)} min {v % 60:.0f} s"


def e(x: Any) -> str:
    """HTML-escape any value taken from data."""
    return html.escape("" if x is None else str(x), quote=True)


# ---------------------------------------------------------------------- reading the folder


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    doc = json.loads(path.read_text())
    return doc if isinstance(doc, dict) else None


def _dict(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _layer_keys(d: dict | None) -> list[str]:
    """Layer keys of a {"4": {...}} mapping, in numeric order."""
    if not isinstance(d, dict):
        return []
    return sorted(d, key=lambda k: (int(k) if str(k).lstrip("-").isdigit() else 10**9, str(k)))


class RunData:
    """Everything the report shows, read once from a results folder; errors kept per part."""

    def __init__(self, out: Path, model: str | None = None, config_text: str | None = None):
        self.out = Path(out)
        self.errors: dict[str, str] = {}
        self.manifest = self._try("manifest", lambda: _read_json(self.out / "run_manifest.json"))
        snap = self.out / "config.snapshot.yaml"
        self.config_text = config_text or (snap.read_text() if snap.is_file() else None)
        self.config = (
            self._try(
                "config", lambda: yaml.safe_load(self.config_text) if self.config_text else None
            )
            or {}
        )
        self.model = model or self._guess_model()
        self.summary = self.layer_reports = self.layer_thresholds = self.layer_manifests = None
        self.evaluation = self.eval_dir = None
        self.detection = self.detection_dir = None
        self.other_detections: list[tuple[Path, dict]] = []
        self.tcav = self.tcav_dir = None
        if self.model:
            self._try("train", self._read_train)
            self._try("evaluate", self._read_evaluation)
            self._try("detect", self._read_detection)
            self._try("tcav", self._read_tcav)

    def _try(self, part: str, fn):
        try:
            return fn()
        except Exception as exc:  # a broken file must not stop the report: show the error
            self.errors[part] = f"{type(exc).__name__}: {exc}"
            log.warning("report: could not read the %s results: %s", part, exc)
            return None

    # model name without loading the model
    def _guess_model(self) -> str | None:
        name = ((self.manifest or {}).get("model") or {}).get("name")
        if name:
            return str(name)
        candidates: set[str] = set()
        for sub in ("cavs", "evaluations", "detections", "tcav"):
            d = self.out / sub
            if d.is_dir():
                candidates |= {
                    p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith(".")
                }
        configured = (self.config.get("model") or {}).get("name")
        if configured and (configured in candidates or not candidates):
            return str(configured)
        if len(candidates) == 1:
            return candidates.pop()
        return None

    def _read_train(self) -> None:
        from esm_tcav.concepts.artifacts import concept_dir, latest_version, load_summary

        version = latest_version(self.out, self.model)
        if version is None:
            return
        self.summary = load_summary(self.out, self.model, version)
        self.layer_reports, self.layer_thresholds, self.layer_manifests = {}, {}, {}
        for key in _layer_keys(self.summary.get("layers")):
            folder = concept_dir(self.out, self.model, int(key), version)
            for name, store in (
                ("report.json", self.layer_reports),
                ("thresholds.json", self.layer_thresholds),
                ("manifest.json", self.layer_manifests),
            ):
                try:
                    doc = _read_json(folder / name)
                except (OSError, json.JSONDecodeError) as exc:
                    self.errors[f"train L{key} {name}"] = str(exc)
                    doc = None
                if doc is not None:
                    store[key] = doc

    def _read_evaluation(self) -> None:
        folder = self.out / "evaluations" / self.model
        self.eval_dir = folder if folder.is_dir() else None
        self.evaluation = _read_json(folder / "projection_eval.json")

    def _read_detection(self) -> None:
        root = self.out / "detections" / self.model
        if not root.is_dir():
            return
        found = []
        for path in root.glob("*/*/summary.json"):
            if any(part.startswith(".") for part in path.relative_to(root).parts):
                continue  # a run in progress or an old copy being replaced
            try:
                found.append((path.stat().st_mtime, path.parent, _read_json(path)))
            except (OSError, json.JSONDecodeError) as exc:
                self.errors["detect"] = f"{_rel(self.out, path)}: {exc}"
        found = [f for f in found if f[2] is not None]
        if not found:
            return
        # the held-out test set is the one the report is about; newest first otherwise
        # (one-pass mode before the sliding-window comparison mode)
        found.sort(
            key=lambda f: (f[2].get("set") == "test", f[2].get("mode") != "sliding-window", f[0]),
            reverse=True,
        )
        _, self.detection_dir, self.detection = found[0]
        self.other_detections = [(d, s) for _, d, s in found[1:]]

    def _read_tcav(self) -> None:
        folder = self.out / "tcav" / self.model
        self.tcav = _read_json(folder / "tcav_scores.json")
        self.tcav_dir = folder if self.tcav is not None else None

    # convenience accessors
    @property
    def concept(self) -> str:
        for doc in (self.summary, self.detection, self.tcav):
            if doc and doc.get("concept"):
                return str(doc["concept"])
        return str((self.config.get("data") or {}).get("concept") or "concept")

    @property
    def fingerprint(self) -> str | None:
        for doc in ((self.manifest or {}).get("model"), self.summary, self.detection, self.tcav):
            if doc and doc.get("fingerprint"):
                return str(doc["fingerprint"])
        return None

    @property
    def alpha(self) -> float:
        for doc in (self.summary, self.tcav):
            if doc and _num(doc.get("alpha")) is not None:
                return float(doc["alpha"])
        return float((self.config.get("evaluate") or {}).get("alpha") or 0.05)

    def step(self, name: str) -> dict | None:
        return ((self.manifest or {}).get("steps") or {}).get(name)

    def eval_layer(self, key: str) -> dict:
        """Per-layer entry of projection_eval.json ({} when evaluate has not run)."""
        ev = self.evaluation or {}
        layers = ev.get("layers") if isinstance(ev.get("layers"), dict) else ev.get("per_layer")
        entry = (layers or {}).get(str(key)) if isinstance(layers, dict) else None
        return entry if isinstance(entry, dict) else {}


def _ci_of(entry: dict, metric: str) -> list | None:
    """The bootstrap interval of `metric` in an evaluation entry, whichever way it is nested."""
    if isinstance(entry.get("heldout"), dict):
        found = _ci_of(entry["heldout"], metric)
        if found is not None:
            return found
    for k in (f"{metric}_ci", f"{metric}_CI"):
        if isinstance(entry.get(k), (list, tuple)):
            return list(entry[k])
    for sub in ("bootstrap", "ci", "intervals"):
        block = entry.get(sub)
        if isinstance(block, dict):
            for k in (f"{metric}_ci", metric):
                if isinstance(block.get(k), (list, tuple)):
                    return list(block[k])
    block = entry.get(metric)
    if isinstance(block, dict) and isinstance(block.get("ci"), (list, tuple)):
        return list(block["ci"])
    return None


def _value_of(entry: dict, metric: str) -> Any:
    v = entry.get(metric)
    if isinstance(v, dict):
        return v.get("value", v.get("estimate"))
    return v


# ---------------------------------------------------------------------- HTML pieces


def _tag(kind: str, text: str) -> str:
    return f'<span class="tag {kind}">{e(text)}</span>'


def _sig_tag(row: dict) -> str:
    if row.get("p") is None and row.get("q") is None:
        return _tag("na", "not tested")
    return _tag("yes", "significant") if row.get("significant") else _tag("no", "not significant")


def _not_run(what: str, verb: str, extra: str = "") -> str:
    return (
        f'<p class="notrun"><b>Not run:</b> {e(what)}. Run <code>esm-tcav {e(verb)} '
        f"CONFIG.yaml</code> (or <code>esm-tcav run CONFIG.yaml</code>) to fill this "
        f"section.{(' ' + extra) if extra else ''}</p>"
    )


def _error_box(part: str, message: str) -> str:
    return (
        f'<p class="warn"><b>Could not read the {e(part)} results:</b> {e(message)}. '
        "The rest of the report is unaffected; rerun that step to fix it.</p>"
    )


def _img(path: Path | None, alt: str, caption: str = "") -> str:
    """An inlined PNG (data: URI), or a visible note when the file is missing or not a PNG."""
    if path is None or not Path(path).is_file():
        return f'<p class="note">Figure not found: {e(path.name if path else alt)}.</p>'
    data = Path(path).read_bytes()
    if not data.startswith(_PNG_MAGIC):
        return f'<p class="note">Figure {e(Path(path).name)} is not a PNG; left out.</p>'
    b64 = base64.b64encode(data).decode("ascii")
    cap = f"<figcaption>{caption}</figcaption>" if caption else ""
    return (
        f'<figure><img src="data:image/png;base64,{b64}" alt="{e(alt)}" '
        f'loading="eager">{cap}</figure>'
    )


def _table(headers: list[tuple[str, str]], rows: list[tuple[str, list[str]]]) -> str:
    """headers: (label, css class); rows: (tr class, cells already escaped)."""
    head = "".join(f'<th class="{c}">{h}</th>' for h, c in headers)
    body = []
    for cls, cells in rows:
        tds = "".join(f'<td class="{headers[i][1]}">{cell}</td>' for i, cell in enumerate(cells))
        body.append(f'<tr class="{cls}">{tds}</tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _kv(pairs: list[tuple[str, str]]) -> str:
    return '<dl class="kv">' + "".join(f"<dt>{e(k)}</dt><dd>{v}</dd>" for k, v in pairs) + "</dl>"


def _rel(out: Path, path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(out).resolve()))
    except ValueError:
        return str(path)


def _file_link(out: Path, path: Path) -> str:
    rel = _rel(out, path)
    return f'<a href="{e(rel)}"><code>{e(rel)}</code></a>'


def p_in_words(p: Any, n_random: Any) -> str:
    """ "higher than all 20 random CAVs" / "3 of 20 random CAVs scored as high or higher"."""
    pv, n = _num(p), _num(n_random)
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


def _random_advice(min_p: float | None, alpha: float) -> str:
    if min_p is None or min_p <= alpha:
        return ""
    need = math.ceil(1 / alpha) - 1
    return (
        f" With this many random CAVs p cannot go below {fmt_p(min_p)}, which is above "
        f"α = {alpha:g}, so no layer can be called significant: set <code>train.n_random"
        f"</code> to at least {need} (99 lets p reach 0.01)."
    )


# ---------------------------------------------------------------------- sections


def _section_verdict(d: RunData) -> str:
    parts = ['<section id="verdict"><h2>1. Verdict</h2>']
    s = d.summary
    if not s:
        if "train" in d.errors:
            parts.append(_error_box("train", d.errors["train"]))
        parts.append(
            _not_run("no concept CAV has been trained, so there is no verdict yet", "train")
        )
        parts.append("</section>")
        return "".join(parts)
    layers = _dict(s.get("layers"))
    keys = _layer_keys(layers)
    best = s.get("best_layer")
    best_key = (
        str(best) if best is not None and str(best) in layers else (keys[0] if keys else None)
    )
    alpha = d.alpha
    if best_key is None:
        parts.append('<p class="notrun">The training summary lists no layer.</p></section>')
        return "".join(parts)
    row = layers[best_key]
    ev = d.eval_layer(best_key)
    ci = fmt_ci(_ci_of(ev, "auroc"))
    n_random = s.get("n_random")
    sig_layers = [k for k in keys if layers[k].get("significant")]
    model = d.model or "the model"
    auroc_txt = f"held-out AUROC {fmt_auc(row.get('auroc'))}" + (f" {ci}" if ci else "")
    stat_txt = (
        f"p = {fmt_p(row.get('p'))} (smallest possible with {fmt_int(n_random)} random "
        f"CAVs: {fmt_p(row.get('min_p'))}), q = {fmt_p(row.get('q'))}"
    )
    if row.get("p") is None:
        cls, big = "", "Not tested"
        line = (
            f"{e(model)} layer {e(best_key)} separates {e(d.concept)} from background with "
            f"{auroc_txt}, but no random CAVs were trained, so there is no p-value "
            "(set <code>train.n_random</code> to 20 or more)."
        )
    elif row.get("significant"):
        cls, big = "good", f"Yes — layer {best_key} encodes {d.concept}"
        line = (
            f"{e(model)} layer {e(best_key)} encodes {e(d.concept)}: {e(auroc_txt)}, "
            f"{e(stat_txt)} — <b>significant</b> at α = {alpha:g}."
        )
    else:
        cls, big = (
            "bad",
            (
                f"Not significant — the evidence that layer {best_key} encodes "
                f"{d.concept} does not reach α = {alpha:g}"
            ),
        )
        line = (
            f"{e(model)} layer {e(best_key)} (the best layer) separates {e(d.concept)} with "
            f"{e(auroc_txt)}, {e(stat_txt)} — <b>not significant</b> at α = {alpha:g}."
            + _random_advice(_num(row.get("min_p")), alpha)
        )
    parts.append(f'<div class="verdict {cls}"><span class="big">{e(big)}</span>{line}</div>')

    facts = []
    if keys:
        facts.append(
            f"Significant at {len(sig_layers)} of {len(keys)} tapped layers"
            + (f" (layers {e(', '.join(sig_layers))})" if sig_layers else "")
            + f"; the best layer by held-out AUROC is layer {e(best_key)}."
        )
    if row.get("p") is not None:
        facts.append(
            f"At layer {e(best_key)} the concept CAV "
            f"{e(p_in_words(row.get('p'), n_random))} on the held-out proteins (random "
            f"CAVs: the same classifier trained on "
            f"{e(random_mode_words(s.get('random_mode')))}); q is p corrected for "
            "testing every layer (Benjamini–Hochberg)."
        )
    det = d.detection
    if det and isinstance(det.get("metrics"), dict):
        m = det["metrics"]
        res = m.get("residue") or {}
        dom = m.get("domains")
        hits = _num(m.get("hit_rate_iou50"))
        hit_txt = (
            (f"{fmt_int(hits * dom)} of {fmt_int(dom)} annotated domains found (IoU ≥ 0.5)")
            if hits is not None and dom
            else "no annotated domains"
        )
        facts.append(
            f"Detection at layer {e(det.get('layer'))} on {fmt_int(det.get('proteins'))} "
            f"{e(_set_name(det))} proteins: {hit_txt}, residue F1 {fmt_2(res.get('f1'))}, "
            f"{fmt_2(m.get('false_spans_per_kres'))} false spans per 1,000 residues of "
            "negative proteins."
        )
    elif det:
        facts.append(
            f"Detection at layer {e(det.get('layer'))}: {fmt_int(det.get('spans'))} "
            f"spans on {fmt_int(det.get('proteins'))} proteins (no annotated domains "
            "to compare with)."
        )
    tc = d.tcav
    t = _dict(_dict((tc or {}).get("layers")).get(best_key))
    if t:
        if t.get("testable", True) and t.get("p") is not None:
            facts.append(
                f"TCAV at layer {e(best_key)}: moving along the concept direction raises the "
                f"{e(_tcav_target(tc))} for {fmt_pct(t.get('score'))} of held-out positives "
                f"(random CAVs {fmt_pct(t.get('random_mean'))} ± "
                f"{fmt_pct(t.get('random_sd'))}), p = {fmt_p(t.get('p'))}, "
                f"q = {fmt_p(t.get('q'))} — "
                f"{'significant' if t.get('significant') else 'not significant'}."
                + (
                    ""
                    if t.get("significant") or not row.get("significant")
                    else " So the concept is decodable from this layer, but this test does not "
                    "show that the model's output depends on it."
                )
            )
    parts.append('<ul class="facts">' + "".join(f"<li>{f}</li>" for f in facts) + "</ul>")
    parts.append(_glossary())
    parts.append("</section>")
    return "".join(parts)


def _glossary() -> str:
    items = [
        (
            "Concept CAV",
            "a linear classifier (standardize → PCA → logistic regression) trained on "
            "one layer's embeddings to tell concept residues/proteins from the rest; its normal "
            "vector is the concept direction.",
        ),
        (
            "Held-out AUROC",
            "how well the CAV ranks concept above non-concept on proteins never "
            "used in training: 0.5 is chance, 1.0 is perfect. The interval is a bootstrap over "
            "proteins.",
        ),
        (
            "Random CAVs",
            "the same classifier trained on shuffled labels. If the concept CAV is not "
            "clearly better than these, the layer has not shown that it encodes the concept.",
        ),
        (
            "p",
            "(1 + number of random CAVs with AUROC ≥ the concept's) / (random CAVs + 1). It can "
            "never be smaller than 1 / (random CAVs + 1), so few random CAVs cap the evidence.",
        ),
        (
            "q",
            "p adjusted for testing several layers (Benjamini–Hochberg). A layer is called "
            "significant when q ≤ α.",
        ),
        (
            "Threshold",
            "a residue is called part of the concept when its CAV score is at least "
            "the threshold; calibrated on held-out proteins.",
        ),
        (
            "z",
            "how many standard deviations of the random CAVs' AUROCs the concept's AUROC lies "
            "above their mean.",
        ),
        (
            "TCAV score",
            "the fraction of held-out positives whose model output goes up when their "
            "residues move along the concept direction (0.5 is no effect on average).",
        ),
    ]
    body = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in items)
    return (
        f'<details><summary>How to read this report</summary><dl class="glossary">{body}'
        "</dl></details>"
    )


def _section_layers(d: RunData) -> str:
    parts = ['<section id="layers"><h2>2. Does each layer encode the concept?</h2>']
    s = d.summary
    if not s:
        parts.append(_not_run("no CAVs trained", "train"))
        parts.append("</section>")
        return "".join(parts)
    layers = _dict(s.get("layers"))
    keys = _layer_keys(layers)
    best = str(s.get("best_layer"))
    has_eval = d.evaluation is not None
    ev_doc = d.evaluation or {}
    level = _num((ev_doc.get("bootstrap") or {}).get("level")) or 1 - d.alpha
    ci_head = f"[{level * 100:.0f}% CI]"
    # a residue-level AUROC is worth its own column only when training used spans or proteins
    residue_col = s.get("granularity") not in (None, "residue") and any(
        layers[k].get("residue_auroc") is not None for k in keys
    )
    rows = []
    for k in keys:
        r = layers[k]
        ev = d.eval_layer(k)
        auc_ci = fmt_ci(_ci_of(ev, "auroc"))
        apr_ci = fmt_ci(_ci_of(ev, "auprc"))
        words = p_in_words(r.get("p"), s.get("n_random"))
        cells = [
            f"L{e(k)}" + (" (best)" if k == best else ""),
            f"{fmt_auc(r.get('auroc'))} {e(auc_ci)}".strip(),
            f"{fmt_auc(r.get('auprc'))} {e(apr_ci)}".strip(),
        ]
        if residue_col:
            res_ci = fmt_ci((ev.get("residue") or {}).get("auroc_ci"))
            cells.append(f"{fmt_auc(r.get('residue_auroc'))} {e(res_ci)}".strip())
        cells += [
            fmt_auc(r.get("cv_auroc_mean")),
            f"{fmt_auc(r.get('random_mean'))} ± {fmt_auc(r.get('random_sd'))}",
            fmt_2(r.get("z")),
            f"{fmt_p(r.get('p'))}<br><span class='note'>min {fmt_p(r.get('min_p'))}</span>",
            fmt_p(r.get("q")),
            f"{_sig_tag(r)}<br><span class='note'>{e(words)}</span>",
        ]
        rows.append(("best" if k == best else "", cells))
    headers = [
        ("Layer", ""),
        (f"Held-out AUROC<br>{ci_head}", "num"),
        (f"AUPRC<br>{ci_head}", "num"),
    ]
    if residue_col:
        headers.append((f"Per-residue AUROC<br>{ci_head}", "num"))
    headers += [
        ("CV AUROC<br>(training folds)", "num"),
        ("Random CAVs AUROC<br>mean ± sd", "num"),
        ("z", "num"),
        ("p<br>(min possible)", "num"),
        ("q (BH)", "num"),
        ("Verdict", ""),
    ]
    parts.append(_table(headers, rows))
    if has_eval and ev_doc.get("cav_version") not in (None, s.get("version")):
        parts.append(
            f'<p class="warn">The intervals and figures come from an evaluation of CAV '
            f"version v{e(ev_doc.get('cav_version'))}, but the newest trained version is "
            f"v{e(s.get('version'))}; rerun <code>esm-tcav evaluate</code>.</p>"
        )
    elif has_eval and ev_doc.get("inputs_match") is False:
        parts.append(
            '<p class="warn">The config or the data changed after these CAVs were '
            "trained; they were evaluated on the held-out proteins recorded when they "
            "were trained. Rerun <code>esm-tcav train</code> to use the current "
            "inputs.</p>"
        )
    notes = []
    rep = (d.layer_reports or {}).get(best) or next(iter((d.layer_reports or {}).values()), None)
    if rep:
        h, t = rep.get("heldout") or {}, rep.get("train") or {}
        unit = h.get("unit", "example")
        notes.append(
            f"Granularity: <b>{e(s.get('granularity'))}</b>. Held-out set: "
            f"{fmt_int(h.get('examples'))} {e(unit)}s from {fmt_int(h.get('proteins'))} "
            f"proteins ({fmt_int(h.get('positive'))} in the concept); training: "
            f"{fmt_int(t.get('examples'))} {e(unit)}s ({fmt_int(t.get('positive'))} concept, "
            f"{fmt_int(t.get('negative'))} not) from {fmt_int(t.get('proteins'))} proteins. "
            "Test proteins are never used to fit a CAV."
        )
        clf = rep.get("classifier") or {}
        if clf:
            pca = (
                f", PCA {fmt_int(clf.get('pca_components_used'))} components "
                f"({fmt_2(100 * _num(clf.get('pca_explained_variance')))}% of variance)"
                if _num(clf.get("pca_explained_variance")) is not None
                else ", no PCA"
            )
            notes.append(
                f"Classifier: {e(clf.get('name'))} (C = {e(clf.get('C'))}){pca}; "
                f"{fmt_int(s.get('n_random'))} random CAVs trained on "
                f"{e(random_mode_words(s.get('random_mode')))}."
            )
    if has_eval:
        boot = ev_doc.get("bootstrap") or {}
        notes.append(
            f"Intervals: percentile bootstrap over {fmt_int(boot.get('n'))} resamples of "
            "whole held-out proteins (residues of one protein are not independent). "
            "AUPRC of a random ranking equals the fraction of concept examples."
        )
    else:
        notes.append(
            "Confidence intervals come from the <code>evaluate</code> step, which has "
            "not run" + (f" ({e(d.errors['evaluate'])})" if "evaluate" in d.errors else "") + "."
        )
    notes.append(
        f"Trained CAVs: version v{e(s.get('version'))} "
        f"(<code>{e(_rel(d.out, Path(s.get('path', ''))))}</code>), created "
        f"{e(s.get('created'))}."
    )
    parts.append("".join(f'<p class="note">{n}</p>' for n in notes))
    stored = [(k, layers[k].get("verdict")) for k in keys if layers[k].get("verdict")]
    if stored:
        parts.append(
            "<details><summary>Verdicts as written by <code>train</code></summary>"
            + "".join(f'<p class="note"><b>L{e(k)}:</b> {e(v)}</p>' for k, v in stored)
            + "</details>"
        )

    # figures from the evaluate step
    if d.eval_dir is not None:
        figs = []
        for name, cap in (
            (
                "auroc_by_layer.png",
                "Concept AUROC per layer with its bootstrap interval (blue) over the "
                "random CAVs' AUROCs (grey dots); the dashed line is chance.",
            ),
            (
                "roc_pr_curves.png",
                "ROC and precision-recall curves of the concept CAV on held-out "
                "proteins, one line per layer.",
            ),
        ):
            if (d.eval_dir / name).is_file():
                figs.append(_img(d.eval_dir / name, name, e(cap)))
        randoms = sorted(
            d.eval_dir.glob("L*_random_comparison.png"),
            key=lambda p: int("".join(c for c in p.name.split("_")[0] if c.isdigit()) or 0),
        )
        if figs:
            parts.append("<h3>Figures</h3>" + "".join(figs))
        if randoms:
            parts.append(
                "<h3>Concept vs random CAVs, per layer</h3><div class='grid'>"
                + "".join(
                    _img(
                        p,
                        p.name,
                        f"{e(p.name.split('_')[0])}: held-out AUROC of the random CAVs "
                        "(histogram) and of the concept CAV (red line).",
                    )
                    for p in randoms
                )
                + "</div>"
            )
        if not figs and not randoms:
            parts.append('<p class="note">The evaluate step left no figures.</p>')
    else:
        parts.append(
            _not_run("evaluate (intervals, ROC/PR curves, AUROC-by-layer plot)", "evaluate")
        )
    parts.append("</section>")
    return "".join(parts)


_METHOD_WORDS = {
    "f1_max": "best F1",
    "precision_at_recall": "best precision at recall ≥ target",
    "fpr": "false-positive rate ≤ target",
}


def _section_thresholds(d: RunData) -> str:
    parts = ['<section id="thresholds"><h2>3. Thresholds</h2>']
    th = d.layer_thresholds or {}
    if not th:
        parts.append(_not_run("no thresholds (they are calibrated by train)", "train"))
        parts.append("</section>")
        return "".join(parts)
    used_method = (d.detection or {}).get("threshold_method") or (
        d.config.get("thresholds") or {}
    ).get("method")
    used_layer = str((d.detection or {}).get("layer")) if d.detection else None
    any_doc = next(iter(th.values()))
    parts.append(
        f"<p>A {e(any_doc.get('level', 'residue'))} is called <i>{e(d.concept)}</i> when its "
        "CAV score (its signed distance to the CAV's decision boundary, in the layer's raw "
        "activation units) is at least the threshold. "
        f"Thresholds are calibrated on {e(any_doc.get('computed_on', 'held-out proteins'))}; "
        "precision, recall, F1 and false-positive rate are measured there. "
        f"Detection uses the <b>{e(_METHOD_WORDS.get(used_method, used_method))}</b> "
        f"threshold (<code>thresholds.method: {e(used_method)}</code>).</p>"
    )
    rows = []
    for k in _layer_keys(th):
        doc = th[k]
        methods = doc.get("methods") or {}
        for i, (name, m) in enumerate(methods.items()):
            target = m.get("target")
            target_txt = (
                ""
                if target is None
                else (
                    f"recall ≥ {fmt_2(target)}"
                    if name == "precision_at_recall"
                    else f"FPR ≤ {fmt_2(target)}"
                    if name == "fpr"
                    else fmt_2(target)
                )
            )
            used = name == used_method and (used_layer is None or used_layer == k)
            rows.append(
                (
                    "best" if used else "",
                    [
                        f"L{e(k)}" if i == 0 else "",
                        e(_METHOD_WORDS.get(name, name))
                        + (f" {_tag('yes', 'used')}" if used else ""),
                        e(target_txt),
                        fmt_threshold(m.get("value")),
                        fmt_2(m.get("precision")),
                        fmt_2(m.get("recall")),
                        fmt_2(m.get("f1")),
                        fmt_2(m.get("fpr")),
                        f"{fmt_int(m.get('tp'))} / {fmt_int(m.get('fp'))} / {fmt_int(m.get('fn'))}",
                    ],
                )
            )
        if not methods:
            rows.append(("", [f"L{e(k)}", "no methods stored", "", "", "", "", "", "", ""]))
    parts.append(
        _table(
            [
                ("Layer", ""),
                ("Method", ""),
                ("Target", ""),
                ("Threshold", "num"),
                ("Precision", "num"),
                ("Recall", "num"),
                ("F1", "num"),
                ("FPR", "num"),
                ("TP / FP / FN", "num"),
            ],
            rows,
        )
    )
    n = fmt_int(any_doc.get("n"))
    parts.append(
        f'<p class="note">Calibration set: {n} held-out {e(any_doc.get("level"))}s, '
        f"{fmt_int(any_doc.get('n_positive'))} in the concept. Stored per layer in "
        "<code>cavs/&lt;model&gt;/L&lt;n&gt;_concept_v&lt;k&gt;/thresholds.json</code>."
        "</p>"
    )
    parts.append("</section>")
    return "".join(parts)


_MODE_WORDS = {
    "one-pass": "one forward pass per protein",
    "sliding-window": "sliding windows, each embedded as its own sequence",
}


def _set_name(det: dict) -> str:
    s = det.get("set")
    return "held-out test" if s == "test" else f"'{s}'"


def _section_detection(d: RunData) -> str:
    parts = ['<section id="detection"><h2>4. Where is the concept? Detection</h2>']
    if "detect" in d.errors:
        parts.append(_error_box("detect", d.errors["detect"]))
    det = d.detection
    if not det:
        parts.append(_not_run("detection (per-residue scores, spans, heatmaps)", "detect"))
        parts.append("</section>")
        return "".join(parts)
    layer = str(det.get("layer"))
    mode = det.get("mode", "one-pass")
    smoothing = det.get("smoothing_window")
    parts.append(
        f"<p>Every residue of the {fmt_int(det.get('proteins'))} {e(_set_name(det))} proteins "
        f"({fmt_int(det.get('residues'))} residues) was scored on the layer {e(layer)} CAV "
        f"({e(_MODE_WORDS.get(mode, mode))}"
        + (
            f", moving average over {fmt_int(smoothing)} residues"
            if _num(smoothing) and float(smoothing) > 1
            else ""
        )
        + f"); runs of at least {fmt_int(det.get('min_span_length'))} residues at or above the "
        f"threshold {fmt_threshold(det.get('threshold'))} ({e(det.get('threshold_method'))}), "
        f"merged across gaps of up to {fmt_int(det.get('merge_gap'))}, are the predicted spans: "
        f"<b>{fmt_int(det.get('spans'))} spans</b> on {fmt_int(det.get('proteins_with_spans'))} "
        "proteins.</p>"
    )
    version = (d.summary or {}).get("version")
    if version is not None and det.get("cav_version") not in (None, version):
        parts.append(
            f'<p class="warn">This detection used CAV version '
            f"v{e(det.get('cav_version'))}, but the newest trained version is "
            f"v{e(version)}; rerun <code>esm-tcav detect</code> to update it.</p>"
        )
    per_layer = _dict(det.get("per_layer"))
    if per_layer:
        rows = []
        for k in _layer_keys(per_layer):
            m = per_layer[k]
            res = m.get("residue") or {}
            dom = m.get("domains")
            hits = _num(m.get("hit_rate_iou50"))
            hit_txt = (
                f"{fmt_int(hits * 100)}% ({fmt_int(hits * dom)} of {fmt_int(dom)})"
                if hits is not None and dom
                else "n/a"
            )
            anyo = _num(m.get("hit_rate_overlap"))
            rows.append(
                (
                    "best" if k == layer else "",
                    [
                        f"L{e(k)}" + (" (spans, heatmaps)" if k == layer else ""),
                        fmt_threshold(m.get("threshold")),
                        fmt_2(res.get("precision")),
                        fmt_2(res.get("recall")),
                        fmt_2(res.get("f1")),
                        fmt_2(m.get("mean_iou")),
                        hit_txt,
                        "n/a" if anyo is None else f"{fmt_int(anyo * 100)}%",
                        fmt_2(m.get("false_spans_per_kres")),
                    ],
                )
            )
        parts.append(
            _table(
                [
                    ("Layer", ""),
                    ("Threshold", "num"),
                    ("Residue precision", "num"),
                    ("Residue recall", "num"),
                    ("Residue F1", "num"),
                    ("Mean IoU", "num"),
                    ("Domains found<br>(IoU ≥ 0.5)", "num"),
                    ("Domains touched<br>(any overlap)", "num"),
                    ("False spans per<br>1,000 negative residues", "num"),
                ],
                rows,
            )
        )
        m0 = per_layer.get(layer) or next(iter(per_layer.values()))
        parts.append(
            f'<p class="note">Residue precision/recall/F1 count every residue of the '
            f"{fmt_int(m0.get('positives'))} annotated and {fmt_int(m0.get('negatives'))} "
            "negative proteins (micro average). Mean IoU: for each annotated domain, the "
            "overlap / union with its best-matching predicted span. False spans: spans predicted "
            "on negative proteins, per 1,000 of their residues.</p>"
        )
    elif det.get("metrics") is None:
        parts.append(
            '<p class="note">These proteins carry no annotated domains, so spans are '
            "not scored against a truth.</p>"
        )
    skipped = det.get("skipped_layers") or {}
    for k, why in skipped.items():
        parts.append(f'<p class="note">Layer {e(k)} left out: {e(why)}</p>')
    files = [f for f in det.get("files") or [] if f != "summary.json"]
    if d.detection_dir is not None and files:
        parts.append(
            '<p class="note">Files: '
            + ", ".join(_file_link(d.out, d.detection_dir / f) for f in files)
            + ".</p>"
        )
    heat = det.get("heatmaps") or []
    if heat and d.detection_dir is not None:
        parts.append(
            "<h3>Per-residue score tracks</h3><p class='note'>The best and worst proteins by "
            "mean IoU and a few drawn at random. Top panel: the concept score along the protein "
            "(blue) and the threshold (dashed red; shaded where called). Bottom: predicted spans "
            "(red) and annotated domains (green). Residues are numbered from 1.</p>"
        )
        figs = []
        rows = _protein_rows(d.detection_dir / "proteins.tsv")
        for rel in heat:
            path = d.detection_dir / rel
            stem = Path(rel).stem
            bits = stem.split("_", 2)
            reason = {
                "top": "among the best by IoU",
                "bottom": "among the worst by IoU",
                "random": "drawn at random",
            }.get(bits[1] if len(bits) > 1 else "", "")
            pid = bits[2] if len(bits) > 2 else stem
            row = rows.get(pid, {})
            caption = [f"<b>{e(row.get('protein_id', pid))}</b>"] + ([e(reason)] if reason else [])
            if row:
                caption += [
                    f"{fmt_int(row.get('length'))} residues",
                    f"{fmt_int(row.get('annotated_spans'))} annotated, "
                    f"{fmt_int(row.get('predicted_spans'))} predicted spans",
                    f"mean IoU {fmt_2(row.get('mean_iou'))}",
                    f"residue F1 {fmt_2(row.get('residue_f1'))}",
                ]
            figs.append(
                _img(path, f"score track of {row.get('protein_id', pid)}", " · ".join(caption))
            )
        parts.append("".join(figs))
    for folder, other in d.other_detections:
        parts.append(
            f'<p class="note">Also in this folder: detection on {e(_set_name(other))} '
            f"(layer {e(other.get('layer'))}, {e(other.get('mode'))}): "
            f"{fmt_int(other.get('spans'))} spans on {fmt_int(other.get('proteins'))} proteins "
            f"— {_file_link(d.out, folder / 'summary.json')}.</p>"
        )
    parts.append("</section>")
    return "".join(parts)


def _safe_id(pid: str) -> str:
    """A protein ID as detect's heatmap file names spell it."""
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in pid)


def _protein_rows(path: Path) -> dict[str, dict]:
    """detect's proteins.tsv keyed by the file-name form of the protein ID ({} if absent)."""
    if not path.is_file():
        return {}
    lines = path.read_text().splitlines()
    if not lines:
        return {}
    head = lines[0].split("\t")
    rows = (dict(zip(head, line.split("\t"), strict=False)) for line in lines[1:] if line)
    return {_safe_id(r.get("protein_id", "")): r for r in rows}


def _tcav_target(tc: dict) -> str:
    t = tc.get("target") or {}
    if t.get("kind") == "sequence_classification":
        return f"class-{t.get('class')} logit of the classification head"
    if t.get("kind") == "masked_lm":
        return "masked-LM log-likelihood of the residues"
    return str(t.get("f") or "model output")


def _section_tcav(d: RunData) -> str:
    parts = ['<section id="tcav"><h2>5. Does the concept drive the model\'s output? TCAV</h2>']
    if "tcav" in d.errors:
        parts.append(_error_box("tcav", d.errors["tcav"]))
    tc = d.tcav
    step = d.step("tcav") or {}
    skipped = (
        (step.get("result") or {}).get("skipped") if isinstance(step.get("result"), dict) else None
    )
    if not tc:
        if skipped:
            parts.append(
                f'<p class="notrun"><b>Skipped:</b> {e(skipped)}. TCAV needs a '
                "model with a classification or masked-LM head.</p>"
            )
        else:
            parts.append(_not_run("TCAV scores", "tcav"))
        parts.append("</section>")
        return "".join(parts)
    parts.append(
        f"<p>Target: the <b>{e(_tcav_target(tc))}</b>. For each of "
        f"{fmt_int(tc.get('proteins'))} {e(tc.get('inputs', 'held-out positives'))}, the "
        "derivative of the target when all its residues move along the CAV; the TCAV score is "
        "the fraction of proteins where it is positive (0.5: no consistent effect). Compared "
        "with the random CAVs' scores by a t-test; q corrects over layers.</p>"
    )
    layers = _dict(tc.get("layers"))
    rows = []
    for k in _layer_keys(layers):
        r = layers[k]
        testable = r.get("testable", True)
        if not testable:
            verdict = _tag("na", "not testable")
        elif r.get("p") is None:
            verdict = _tag("na", "not tested")
        else:
            verdict = _sig_tag(r)
        mag = r.get("magnitude_test") or {}
        rows.append(
            (
                "",
                [
                    f"L{e(k)}",
                    fmt_2(r.get("score")),
                    f"{fmt_2(r.get('random_mean'))} ± {fmt_2(r.get('random_sd'))}",
                    fmt_2(r.get("magnitude")),
                    f"{fmt_2(mag.get('random_mean'))} ± {fmt_2(mag.get('random_sd'))}",
                    fmt_2(r.get("t")),
                    fmt_p(r.get("p")),
                    fmt_p(r.get("q")),
                    verdict
                    + (
                        f"<br><span class='note'>{e(r.get('verdict'))}</span>"
                        if not testable
                        else ""
                    ),
                ],
            )
        )
    parts.append(
        _table(
            [
                ("Layer", ""),
                ("TCAV score", "num"),
                ("Random CAVs<br>mean ± sd", "num"),
                ("Magnitude score", "num"),
                ("Random magnitude<br>mean ± sd", "num"),
                ("t", "num"),
                ("p", "num"),
                ("q (BH)", "num"),
                ("Verdict", ""),
            ],
            rows,
        )
    )
    spread = [(_num(r.get("random_sd")) or 0) for r in layers.values() if isinstance(r, dict)]
    if spread and max(spread) > 0.2:
        parts.append(
            '<p class="note">The random CAVs\' TCAV scores spread widely (sd up to '
            f"{fmt_2(max(spread))}): random directions also push the output "
            "consistently one way, so a high TCAV score alone is not evidence; only a "
            "score outside the random ones' range is.</p>"
        )
    if tc.get("truncated"):
        parts.append(
            f'<p class="note">{len(tc["truncated"])} proteins were truncated to the '
            "model's context.</p>"
        )
    for k, why in (tc.get("skipped_layers") or {}).items():
        parts.append(f'<p class="note">Layer {e(k)} left out: {e(why)}</p>')
    version = (d.summary or {}).get("version")
    versions = {r.get("cav_version") for r in layers.values()} - {None}
    if version is not None and versions and versions != {version}:
        parts.append(
            f'<p class="warn">TCAV used CAV version(s) '
            f"{e(', '.join(f'v{v}' for v in sorted(versions)))}, the newest trained "
            f"version is v{e(version)}; rerun <code>esm-tcav tcav</code>.</p>"
        )
    if d.tcav_dir is not None and (d.tcav_dir / "tcav_scores.png").is_file():
        parts.append(
            _img(
                d.tcav_dir / "tcav_scores.png",
                "TCAV scores by layer",
                "Concept TCAV score (blue) and the random CAVs' mean ± sd (grey) per "
                "layer; n.s. = not significant, * = q ≤ α.",
            )
        )
    parts.append("</section>")
    return "".join(parts)


def _step_words(name: str, result: Any) -> str:
    if not isinstance(result, dict):
        return e(result) if result is not None else ""
    if result.get("skipped"):
        return f"skipped: {e(result['skipped'])}"
    if name == "embed":
        return (
            f"{fmt_int(result.get('proteins'))} proteins: {fmt_int(result.get('embedded_now'))}"
            f" embedded now, {fmt_int(result.get('reused'))} reused from the store"
        )
    if name == "train":
        verb = "reused" if result.get("reused") else "trained"
        return f"{verb} CAV version v{e(result.get('version'))}"
    if name == "detect":
        return (
            f"{fmt_int(result.get('spans'))} spans on {fmt_int(result.get('proteins'))} "
            f"proteins at layer {e(result.get('layer'))}"
        )
    if name == "evaluate":
        return (
            f"intervals and figures for CAV version v{e(result.get('cav_version'))}, "
            f"{len(_dict(result.get('layers')))} layers"
        )
    if name == "tcav":
        return (
            f"TCAV on {fmt_int(result.get('proteins'))} proteins, "
            f"{len(_dict(result.get('layers')))} layers"
        )
    if name == "report":
        return "report.html"
    keys = [k for k in ("version", "layers", "output") if k in result]
    return ", ".join(f"{k}: {e(result[k] if k != 'layers' else len(result[k]))}" for k in keys)


def _section_provenance(d: RunData) -> str:
    parts = ['<section id="provenance"><h2>6. Provenance: what produced these results</h2>']
    man = d.manifest or {}
    model = man.get("model") or {}
    cfg_model = d.config.get("model") or {}
    desc = None
    if d.model:
        try:
            from esm_tcav.models.registry import get_spec

            extra = cfg_model.get("registry_file")
            desc = get_spec(d.model, extra if extra and Path(extra).is_file() else None)
        except Exception:  # a user's registry entry may be gone; the name is enough
            desc = None
    layer_manifest = next(iter((d.layer_manifests or {}).values()), {}) or {}
    pairs = [
        (
            "Model",
            f"<b>{e(d.model or 'unknown')}</b>"
            + (f" — {e(desc.description)}" if desc is not None and desc.description else ""),
        ),
        ("Model fingerprint", f"<code>{e(d.fingerprint or 'unknown')}</code>"),
        (
            "Weights from",
            e(model.get("source") or cfg_model.get("path") or "the registry's default source"),
        ),
        (
            "Head",
            e(model.get("head") or ((d.tcav or {}).get("target") or {}).get("kind") or "unknown"),
        ),
        (
            "Tapped layers",
            e(
                ", ".join(str(x) for x in model.get("layers") or cfg_model.get("layers") or [])
                or "registry default"
            ),
        ),
        ("Concept", e(d.concept)),
        ("Seed", e(man.get("seed", d.config.get("seed")))),
        (
            "esm-tcav version",
            e(man.get("version") or layer_manifest.get("package_version") or __version__)
            + (f" (Python {e(man.get('python'))})" if man.get("python") else ""),
        ),
        ("Results folder", f"<code>{e(d.out.resolve())}</code>"),
    ]
    if d.summary:
        pairs.append(
            (
                "CAV artifacts",
                f"version v{e(d.summary.get('version'))}, created "
                f"{e(d.summary.get('created'))}; inputs hash "
                f"<code>{e(str(d.summary.get('inputs_hash', ''))[:16])}</code>",
            )
        )
    parts.append(_kv(pairs))

    data = man.get("data") or {}
    if data:
        parts.append(
            "<h3>Data files</h3>"
            + _table(
                [("Role", ""), ("File", ""), ("sha256", "")],
                [
                    (
                        "",
                        [
                            e(k),
                            f"<code>{e(os.path.normpath(str(v.get('path'))))}</code>",
                            f"<code>{e(v.get('sha256'))}</code>",
                        ],
                    )
                    for k, v in data.items()
                ],
            )
        )
    else:
        cfg_data = d.config.get("data") or {}
        files = [
            (k, v)
            for k, v in cfg_data.items()
            if k in ("positives", "negatives", "spans_file", "test_positives", "test_negatives")
            and v
        ]
        if files:
            parts.append(
                "<h3>Data files</h3><p class='note'>From the config (no run manifest, "
                "so no checksums):</p>"
                + _table(
                    [("Role", ""), ("File", "")],
                    [("", [e(k), f"<code>{e(v)}</code>"]) for k, v in files],
                )
            )

    steps = man.get("steps") or {}
    shown = [(k, v) for k, v in steps.items() if k != "report" and isinstance(v, dict)]
    if shown:
        from esm_tcav.config import STEPS

        shown.sort(key=lambda kv: STEPS.index(kv[0]) if kv[0] in STEPS else 99)
        total = sum(_num(v.get("seconds")) or 0 for _, v in shown)
        rows = [
            (
                "",
                [
                    e(k),
                    fmt_seconds(v.get("seconds")),
                    e(str(v.get("finished", "")).replace("T", " ")),
                    _step_words(k, v.get("result")),
                ],
            )
            for k, v in shown
        ]
        rows.append(("best", ["total", fmt_seconds(total), "", ""]))
        parts.append(
            "<h3>Steps and timings</h3>"
            + _table([("Step", ""), ("Time", "num"), ("Finished", ""), ("What happened", "")], rows)
        )
    else:
        parts.append(
            '<p class="note">No run manifest (<code>run_manifest.json</code>) in this '
            "folder, so there are no step timings.</p>"
        )
    if d.config_text:
        parts.append(
            "<details><summary>Configuration snapshot "
            "(<code>config.snapshot.yaml</code>)</summary>"
            f"<pre>{e(d.config_text)}</pre></details>"
        )
    if d.errors:
        parts.append(
            "<details><summary>Problems while reading the results "
            f"({len(d.errors)})</summary><ul>"
            + "".join(f"<li><b>{e(k)}</b>: {e(v)}</li>" for k, v in d.errors.items())
            + "</ul></details>"
        )
    parts.append("</section>")
    return "".join(parts)


# ---------------------------------------------------------------------- assembling


def _template() -> Template:
    text = resources.files("esm_tcav.report").joinpath("templates/report.html").read_text("utf-8")
    return Template(text)


def render_report(d: RunData) -> str:
    """The whole HTML document for one results folder."""
    sections = []
    for build in (
        _section_verdict,
        _section_layers,
        _section_thresholds,
        _section_detection,
        _section_tcav,
        _section_provenance,
    ):
        try:
            sections.append(build(d))
        except Exception as exc:  # a malformed file must cost one section, not the report
            log.warning("report: section %s failed: %s", build.__name__, exc, exc_info=True)
            part = build.__name__.removeprefix("_section_")
            box = _error_box(part, f"{type(exc).__name__}: {exc}")
            sections.append(f"<section>{box}</section>")
    title = f"esm-tcav report: {d.concept} in {d.model or 'unknown model'}"
    generated = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    subtitle = (
        f"Concept <b>{e(d.concept)}</b> · model <b>{e(d.model or 'unknown')}</b> "
        f"(fingerprint <code>{e(d.fingerprint or 'unknown')}</code>) · generated "
        f"{e(generated)}"
    )
    return _template().substitute(
        title=e(title),
        subtitle=subtitle,
        body="\n".join(sections),
        version=e(__version__),
        generated=e(generated),
    )


def write_report(
    out_dir: Path, model_name: str | None = None, config_text: str | None = None
) -> Path:
    """Read a results folder and write `report.html` into it atomically; returns its path."""
    from esm_tcav.io.files import atomic_write_text

    out_dir = Path(out_dir)
    data = RunData(out_dir, model_name, config_text)
    path = out_dir / REPORT_NAME
    atomic_write_text(path, render_report(data))
    log.info("report written to %s", path)
    return path


def _model_name(ctx) -> str | None:
    """The model's registry name, from the files when possible (loading the model is slow)."""
    if ctx.model_loaded:
        return ctx.model_name
    manifest = ctx.out / "run_manifest.json"
    try:
        name = (
            (json.loads(manifest.read_text()).get("model") or {}).get("name")
            if manifest.is_file()
            else None
        )
    except (OSError, json.JSONDecodeError):
        name = None
    if name:
        return name
    name = ctx.cfg.model.name
    if name:
        return name
    return ctx.model_name  # no name in the config: the registry resolves it from the weights


def run_report(ctx) -> Path:
    """The `report` stage: write `<output_dir>/report.html` from what the other stages left."""
    return write_report(ctx.out, _model_name(ctx))
