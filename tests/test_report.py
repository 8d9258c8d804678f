"""report.html: built from a real run (tiny model, planted concept), rendered in real Chromium.

The screenshot of the full report is kept as `test-artifacts/report.png` under the repo root.
"""

from __future__ import annotations

import base64
import json
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from esm_tcav.config import load_config
from esm_tcav.report.render import (
    fmt_2,
    fmt_auc,
    fmt_ci,
    fmt_p,
    fmt_threshold,
    p_in_words,
    run_report,
    write_report,
)
from esm_tcav.run.context import RunContext
from esm_tcav.run.pipeline import run_pipeline

from .test_pipeline import write_planted_run

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
MODEL = "tiny_esm2"


# ---------------------------------------------------------------------- a real run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_hf_folder, tiny_registry) -> Path:
    """The whole pipeline on the planted concept; 39 random CAVs so p can reach 0.025."""
    folder = tmp_path_factory.mktemp("report_run")
    cfg = write_planted_run(
        folder,
        tiny_hf_folder,
        tiny_registry,
        train={"n_random": 39},
        detect={"heatmaps_top": 2, "heatmaps_random": 1},
    )
    ctx = RunContext(load_config(cfg))
    run_pipeline(ctx)
    return folder / "out"


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


def _copy(run_dir: Path, dest: Path, drop: tuple[str, ...] = ()) -> Path:
    """A copy of the results folder (without the embedding store) minus some step outputs."""
    shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns("embeddings", "report.html"))
    for sub in drop:
        shutil.rmtree(dest / sub, ignore_errors=True)
    manifest = _json(dest / "run_manifest.json")
    for step in {"evaluations": "evaluate", "detections": "detect", "tcav": "tcav"}.items():
        if step[0] in drop:
            manifest["steps"].pop(step[1], None)
    (dest / "run_manifest.json").write_text(json.dumps(manifest))
    return dest


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.srcs.append(attrs.get("src") or "")
        if tag in ("script", "link", "iframe", "object", "embed") or (
            tag != "a"
            and any(str(v).startswith(("http:", "https:", "//")) for v in attrs.values() if v)
        ):
            self.external.append(f"<{tag} {attrs}>")


def _images(html_text: str) -> _Images:
    parser = _Images()
    parser.feed(html_text)
    return parser


# ---------------------------------------------------------------------- in the browser


@pytest.mark.browser
def test_report_renders_the_run_with_its_numbers(run_dir):
    from .browser import render_html

    report = run_dir / "report.html"
    assert report.is_file()
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    res = render_html(report, shot, full_page=True)
    assert res.console_errors == [], res.console_errors
    assert shot.stat().st_size > 10_000
    dom = res.dom
    assert res.title == f"esm-tcav report: planted_motif in {MODEL}"

    summary = _json(run_dir / "cavs" / MODEL / "summary_v1.json")
    evaluation = _json(run_dir / "evaluations" / MODEL / "projection_eval.json")
    manifest = _json(run_dir / "run_manifest.json")
    best = str(summary["best_layer"])
    row = summary["layers"][best]
    heldout = evaluation["layers"][best]["heldout"]

    # the verdict, in the words and formats of the report
    auroc_txt = f"held-out AUROC {fmt_auc(row['auroc'])} {fmt_ci(heldout['auroc_ci'])}"
    stat_txt = (
        f"t-test p = {fmt_p(row['p'])}, q = {fmt_p(row['q'])} (empirical p "
        f"{fmt_p(row['p_empirical'])}, smallest possible with 39 random CAVs: "
        f"{fmt_p(row['min_p'])})"
    )
    assert f"{MODEL} layer {best} encodes planted_motif: {auroc_txt}, {stat_txt}" in dom
    assert row["significant"] and "<b>significant</b> at α = 0.05" in dom
    assert p_in_words(row["p_empirical"], 39) == "beats all 39 random CAVs"
    # the controls and the grade beside the verdict
    for name, c in row["controls"].items():
        if name.startswith("_"):
            continue
        assert f"held-out AUROC {fmt_auc(c['auroc'])}; layer {best} minus control" in dom
        assert f"{c['delta_auroc']:+.3f}" in dom
    assert f"Grade: <b>{row['grade']}</b>" in dom
    assert "chosen by cross-validated AUROC on the training proteins" in dom

    # every layer: AUROC with interval, AUPRC, random baseline, p and q
    for key, layer in summary["layers"].items():
        ev = evaluation["layers"][key]["heldout"]
        assert f"{fmt_auc(layer['auroc'])} {fmt_ci(ev['auroc_ci'])}" in dom, key
        assert f"{fmt_auc(layer['auprc'])} {fmt_ci(ev['auprc_ci'])}" in dom, key
        assert f"{fmt_auc(layer['random_mean'])} ± {fmt_auc(layer['random_sd'])}" in dom, key
        assert f"{fmt_2(layer['z'])}<" in dom, key
        # thresholds of every method, from thresholds.json
        th = _json(run_dir / "cavs" / MODEL / f"L{key}_concept_v1" / "thresholds.json")
        for method in th["methods"].values():
            assert f">{fmt_threshold(method['value'])}<" in dom, (key, method)

    # detection metrics of the chosen layer
    det = _json(run_dir / "detections" / MODEL / "test" / f"L{best}" / "summary.json")
    m = det["metrics"]
    assert f"residue F1 {fmt_2(m['residue']['f1'])}" in dom
    assert (
        f"{fmt_2(m['false_spans_per_kres'])} false spans per 1,000 residues of negative proteins"
    ) in dom
    assert f"<b>{det['spans']} spans</b>" in dom

    # TCAV: scores and verdicts per layer, the last layer not testable under a class head
    tcav = _json(run_dir / "tcav" / MODEL / "tcav_scores.json")
    for t in tcav["layers"].values():
        assert f">{fmt_2(t['score'])}<" in dom
        if t["testable"]:
            assert f">{fmt_p(t['p'])}<" in dom
    assert "not testable" in dom

    # provenance: the model, its fingerprint, data checksums, seed, config snapshot, timings
    assert manifest["model"]["fingerprint"] in dom
    for entry in manifest["data"].values():
        assert entry["sha256"] in dom
    assert "config.snapshot.yaml" in dom and "n_random: 39" in dom
    assert "Steps and timings" in dom and ">evaluate<" in dom

    # self-contained: every figure inlined as a PNG data URI, nothing loaded from elsewhere
    images = _images(dom)
    expected = 2 + len(summary["layers"]) + len(det["heatmaps"]) + 1
    assert len(images.srcs) == expected, len(images.srcs)
    for src in images.srcs:
        assert src.startswith("data:image/png;base64,"), src[:60]
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert images.external == []
    assert not list(run_dir.glob(".report.html.*"))


@pytest.mark.browser
def test_partial_results_render_with_not_run_sections(run_dir, tmp_path):
    from .browser import render_html

    only_train = _copy(run_dir, tmp_path / "only_train", drop=("evaluations", "detections", "tcav"))
    path = write_report(only_train)
    res = render_html(path)
    assert res.console_errors == [], res.console_errors
    dom = res.dom
    summary = _json(only_train / "cavs" / MODEL / "summary_v1.json")
    best = str(summary["best_layer"])
    assert f"held-out AUROC {fmt_auc(summary['layers'][best]['auroc'])}," in dom
    assert "evaluate (intervals, ROC/PR curves" in dom
    assert "<b>Not run:</b> detection" in dom and "<b>Not run:</b> TCAV scores" in dom
    assert _images(dom).srcs == []

    empty = tmp_path / "empty"
    empty.mkdir()
    res = render_html(write_report(empty))
    assert res.console_errors == [], res.console_errors
    assert res.dom.count("<b>Not run:</b>") >= 4
    assert "no concept CAV has been trained" in res.dom


# ---------------------------------------------------------------------- without a browser


def test_broken_file_costs_one_section_not_the_report(run_dir, tmp_path):
    out = _copy(run_dir, tmp_path / "broken")
    det = next((out / "detections" / MODEL).glob("*/*/summary.json"))
    det.write_text("{broken")
    (out / "tcav" / MODEL / "tcav_scores.json").write_text(json.dumps({"layers": "oops"}))
    text = write_report(out).read_text()
    assert "Could not read the detect results" in text
    assert "Not run:</b> detection" in text
    assert "1. Verdict" in text and "6. Provenance" in text
    assert "encodes planted_motif" in text


def test_values_from_data_are_escaped(run_dir, tmp_path):
    out = _copy(run_dir, tmp_path / "escape")
    evil = '<img src=x onerror="alert(1)">'
    for path in (out / "cavs" / MODEL).glob("summary_v*.json"):
        doc = _json(path)
        doc["concept"] = evil
        path.write_text(json.dumps(doc))
    text = write_report(out).read_text()
    assert evil not in text
    assert "&lt;img src=x onerror=&#34;alert(1)&#34;&gt;" in text


def test_skipped_tcav_is_said_plainly(run_dir, tmp_path):
    out = _copy(run_dir, tmp_path / "skipped", drop=("tcav",))
    manifest = _json(out / "run_manifest.json")
    manifest["steps"]["tcav"] = {
        "seconds": 0.0,
        "result": {"skipped": "the model has no sequence-classification or masked-LM head"},
    }
    (out / "run_manifest.json").write_text(json.dumps(manifest))
    text = write_report(out).read_text()
    assert "<b>Skipped:</b> the model has no sequence-classification" in text


def test_stale_detection_is_flagged(run_dir, tmp_path):
    out = _copy(run_dir, tmp_path / "stale")
    det = next((out / "detections" / MODEL).glob("test/*/summary.json"))
    doc = _json(det)
    doc["cav_version"] = 0
    det.write_text(json.dumps(doc))
    assert "This detection used CAV version v0" in write_report(out).read_text()


def test_run_report_reads_files_without_loading_the_model(run_dir, tmp_path):
    out = _copy(run_dir, tmp_path / "noload")
    snapshot = (run_dir / "config.snapshot.yaml").read_text()
    cfg_path = tmp_path / "again.yaml"
    cfg_path.write_text(snapshot.replace("output_dir: out", f"output_dir: {out}"))
    ctx = RunContext(load_config(cfg_path))
    path = run_report(ctx)
    assert path == out / "report.html" and path.is_file()
    assert not ctx.model_loaded


def test_number_formats():
    assert fmt_auc(0.97312) == "0.973" and fmt_auc(None) == "n/a" and fmt_auc(float("nan")) == "n/a"
    assert fmt_ci([0.951, 0.9884]) == "[0.951–0.988]" and fmt_ci(None) == ""
    assert fmt_p(1 / 21) == "0.048" and fmt_p(0.1) == "0.1" and fmt_p(1.0) == "1"
    assert fmt_p(2.04e-6) == "2.0 × 10⁻⁶"
    assert p_in_words(1 / 21, 20) == "beats all 20 random CAVs"
    assert p_in_words(4 / 21, 20) == "3 of 20 random CAVs score as high or higher"
