"""The new-protein view (proteins.html): written by `detect --input` and `scan`, ranked by
evidence, score tracks for the top and the named proteins; rendered in headless Chromium with
no console errors (screenshots kept in test-artifacts/)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from esm_tcav.report.proteins_view import ProteinRow, Track, rank_rows, track_svg
from esm_tcav.run.pipeline import run_step
from tests.test_detect import MOTIF, _background, ctx_for
from tests.test_detect import trained as trained  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


@pytest.fixture(scope="module")
def detected(trained, tmp_path_factory):  # noqa: F811
    """detect --input on 14 new proteins: 4 carry the motif, one hostile ID is named."""
    rng = np.random.default_rng(5)
    folder = tmp_path_factory.mktemp("newprots")
    records = []
    for i in range(14):
        body = _background(rng, 60)
        seq = body[:20] + MOTIF + body[20:] if i % 4 == 0 else body
        records.append((f"new{i}", seq))
    records.append(("<b>odd&id</b>", _background(rng, 40)))
    fasta = folder / "mine.fasta"
    fasta.write_text("".join(f">{pid}\n{seq}\n" for pid, seq in records))
    ctx = ctx_for(trained, **{"detect.layer": 1})
    result = run_step(ctx, "detect", input_path=fasta, show=["<b>odd&id</b>", "nosuch"])
    return {"result": result, "records": records, "ctx": ctx}


def test_detect_input_writes_the_view_ranked_by_evidence(detected):
    view = Path(detected["result"]["view"])
    assert view.name == "proteins.html" and view.parent == Path(detected["result"]["output"])
    html = view.read_text()
    ranked = re.findall(r'<tr class="[a-z]*"><td class="num">\d+</td><td>([^<]+)</td>', html)
    motif_ids = {f"new{i}" for i in range(0, 14, 4)}
    assert set(ranked[:4]) == motif_ids  # the proteins carrying the motif come first
    # the named protein's track is drawn, its ID escaped; the unknown one is reported
    assert 'data-protein="&lt;b&gt;odd&amp;id&lt;/b&gt;"' in html and "<b>odd&id</b>" not in html
    assert "<code>nosuch</code> (asked for with --show) is not among" in html
    drawn = set(ranked[:10]) | {"&lt;b&gt;odd&amp;id&lt;/b&gt;"}  # top 10 + the named one
    assert html.count("<svg") == len(drawn) and len(ranked) == 15
    assert "<script" not in html and "http" not in html.split("</head>")[1].replace(
        "http://www.w3.org/2000/svg", ""
    )


def test_an_unknown_show_id_is_said_on_the_console(detected, caplog):
    from esm_tcav.report.proteins_view import detect_view

    with caplog.at_level("WARNING"):
        detect_view(Path(detected["result"]["output"]), ["<b>odd&id</b>", "nosuch"])  # as before
    said = [r.getMessage() for r in caplog.records if "--show" in r.getMessage()]
    assert said == ["--show: 1 ID not in the input: nosuch"]


def test_the_report_links_the_view(detected):
    from esm_tcav.report.render import run_report

    report = run_report(detected["ctx"]).read_text()
    assert "proteins.html</code></a></b> (the proteins ranked by evidence" in report


@pytest.mark.browser
def test_view_renders_in_chromium_without_console_errors(detected):
    from .browser import render_html

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "proteins_view.png"
    res = render_html(Path(detected["result"]["view"]), shot, full_page=True)
    assert res.console_errors == [], res.console_errors
    assert shot.stat().st_size > 10_000
    assert res.title == "esm-tcav: motif in mine proteins"
    for pid in ("new0", "new4", "new8", "new12"):
        assert f'data-protein="{pid}"' in res.dom
    assert res.dom.count("<polyline") == res.dom.count("<svg") >= 10


def test_ranking_and_track_geometry():
    rows = [
        ProteinRow("b", 10, 0, 0.5, 0.1),
        ProteinRow("a", 10, 2, 0.9, 0.2),
        ProteinRow("c", 10, 1, 0.5, 0.3),
    ]
    assert [r.protein_id for r in rank_rows(rows)] == ["a", "c", "b"]
    svg = track_svg(Track("p", 100, np.linspace(-1, 1, 100), ((10, 20, 0.5),)), 0.0)
    assert svg.count("<polyline") == 1 and "<title>10-20 (mean score 0.500)</title>" in svg
    no_scores = track_svg(Track("p", 50, None, ()), 0.0)
    assert "<polyline" not in no_scores and "not kept" in no_scores


# ---------------------------------------------------------------------- a library scan


@pytest.fixture(scope="module")
def scanned(tiny_hf_folder, tiny_registry, tmp_path_factory):
    """`esm-tcav scan` (the CLI) of 12 planted proteins with a 3-concept library."""
    from typer.testing import CliRunner

    from esm_tcav.cli import app
    from esm_tcav.concepts.concept import Concept as Record
    from esm_tcav.concepts.library import add_to_library
    from esm_tcav.models.loading import load_model
    from tests.test_scan import planted_cav, planted_proteins, random_cav, write_fasta

    tiny = load_model("tiny_esm2", tiny_hf_folder, registry_file=tiny_registry)
    root = tmp_path_factory.mktemp("scanview")
    model = {
        "name": tiny.spec.name,
        "fingerprint": tiny.fingerprint,
        "hidden_size": tiny.spec.hidden_size,
        "path": str(tiny_hf_folder),
        "registry_file": str(tiny_registry),
    }
    cavs = [planted_cav(tiny, 3), random_cav("rand_a", 1, 32, 1), random_cav("rand_b", 2, 32, 2)]
    for cav in cavs:
        add_to_library(root / "lib", model, Record(cav, threshold=0.0, min_span_length=4))
    items = planted_proteins(12)
    fasta = write_fasta(root / "p.fasta", [p for p, _ in items])
    res = CliRunner().invoke(
        app,
        ["scan", str(fasta), "--library", str(root / "lib"), "--out", str(root / "scan"),
         "--show", "prot3"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return {"out": root / "scan", "items": items}


def test_scan_writes_one_section_per_concept(scanned):
    html = (scanned["out"] / "proteins.html").read_text()
    assert html.count('<section id="concept-') == 3
    for name in ("trp_run", "rand_a", "rand_b"):
        assert f"<h2>{name} " in html
    trp = html.split('<section id="concept-1">')[1].split("</section>")[0]
    ranked = re.findall(r'<tr class="[a-z]*"><td class="num">\d+</td><td>([^<]+)</td>', trp)
    with_runs = {p.id for p, runs in scanned["items"] if runs}
    assert set(ranked[: len(with_runs)]) == with_runs  # the planted proteins rank first
    header = (scanned["out"] / "proteins.tsv").read_text().splitlines()[0]
    assert "trp_run:mean_score" in header.split("\t")


@pytest.mark.browser
def test_scan_view_renders_in_chromium(scanned):
    from .browser import render_html

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "scan_view.png"
    res = render_html(scanned["out"] / "proteins.html", shot, full_page=True)
    assert res.console_errors == [], res.console_errors
    assert shot.stat().st_size > 10_000
    assert res.title == "esm-tcav scan: 3 concepts in 12 proteins"
    assert res.dom.count('data-protein="prot3"') == 3  # named: drawn in every section
