"""InterProScan TSV and HMMER domtblout as span inputs (issue 13; reused by library build)."""

from __future__ import annotations

from pathlib import Path

import pytest

from esm_tcav.errors import InputError
from esm_tcav.io.annotations import read_domtblout, read_interproscan_tsv
from esm_tcav.io.proteins import Span
from esm_tcav.io.readers import attach_spans, read_jsonl

DATA = Path(__file__).parent / "data"


def test_interproscan_tsv_spans_per_protein_by_signature():
    spans = read_interproscan_tsv(DATA / "interproscan_2.tsv").spans
    assert spans["A0PJY2"][:2] == [Span(262, 284, "PF00096"), Span(290, 312, "PF00096")]
    assert {s.name for s in spans["A0PJY2"]} == {"PF00096", "SM00355", "mobidb-lite"}
    assert spans["A2RRD8"] == [Span(163, 185, "PF00096")]


def test_interproscan_tsv_keeps_only_the_analyses_asked_for():
    spans = read_interproscan_tsv(DATA / "interproscan_2.tsv", analyses=["pfam"]).spans
    assert {s.name for v in spans.values() for s in v} == {"PF00096"}
    assert len(spans["A0PJY2"]) == 2


def test_interproscan_spans_attach_to_the_scanned_sequences():
    proteins = [p for p in read_jsonl(DATA / "zinc_fingers_3.jsonl")]
    spans = read_interproscan_tsv(DATA / "interproscan_2.tsv", analyses=["Pfam"]).spans
    placed = {p.id: p for p in attach_spans(proteins, spans, "pfam")}
    assert Span(290, 312, "PF00096") in placed["A0PJY2"].spans


def test_interproscan_tsv_refuses_a_span_past_the_length(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("P1\tmd5\t100\tPfam\tPF1\td\t90\t120\t1e-3\tT\t01-12-2026\n")
    with pytest.raises(InputError, match=r"bad.tsv:1: record 'P1': span 90-120 ends past"):
        read_interproscan_tsv(bad)


def test_interproscan_tsv_refuses_too_few_columns(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("P1\t1\t10\tPF1\n")
    with pytest.raises(InputError, match="4 tab-separated columns"):
        read_interproscan_tsv(bad)


def test_hmmscan_domtblout_reads_the_protein_from_the_query_column():
    spans = read_domtblout(DATA / "hmmscan_2.domtblout").spans
    assert spans["A0PJY2"] == [
        Span(274, 300, "PF13465"),
        Span(399, 407, "PF13465"),
        Span(262, 284, "PF00096"),
    ]
    assert spans["A2RRD8"] == [Span(161, 185, "PF00096")]


def test_domtblout_evalue_filter_and_alignment_coordinates():
    ann = read_domtblout(DATA / "hmmscan_2.domtblout", max_evalue=1e-3, coordinates="alignment")
    spans = ann.spans
    assert spans["A0PJY2"] == [Span(275, 299, "PF13465"), Span(262, 284, "PF00096")]
    assert spans["A2RRD8"] == [Span(163, 185, "PF00096")]


def test_hmmsearch_layout_reads_the_protein_from_the_target_column(tmp_path):
    # hmmsearch: the profile is the query, the proteins are the targets; no trailer (pyhmmer).
    line = (
        "A0PJY2 - 475 zf-C2H2 PF00096.29 23 4e-18 63.9 14.2 1 1 1.4e-07 7e-06 26.0 1.2 "
        "1 23 262 284 262 284 0.97 some protein\n"
    )
    path = tmp_path / "search.domtblout"
    path.write_text("# target name ...\n" + line)
    assert read_domtblout(path).spans == {"A0PJY2": [Span(262, 284, "PF00096")]}
    with pytest.raises(InputError, match="ends past the sequence end"):
        read_domtblout(path, protein_column="query")  # the profile is 23 long


def test_our_interproscan_tsv_reads_back_as_the_same_spans(tmp_path):
    from esm_tcav.io.files import atomic_write_lines
    from esm_tcav.io.writers import INTERPROSCAN_COLUMNS, interproscan_tsv_lines
    from esm_tcav.localize.spans import ScoredSpan

    rows = [
        ("P1", ScoredSpan(3, 9, 1.5)),
        ("P1", ScoredSpan(12, 14, 0.2)),
        ("Q2", ScoredSpan(1, 4, 2)),
    ]
    seqs = {"P1": "MKVLAGWYHHKLAGE", "Q2": "MKVL"}
    path = tmp_path / "spans.interproscan.tsv"
    atomic_write_lines(path, interproscan_tsv_lines(rows, seqs, "zf", 4, "01-12-2026"))
    first = path.read_text().splitlines()[0].split("\t")
    assert len(first) == len(INTERPROSCAN_COLUMNS)
    assert first[0] == "P1" and first[2:4] == ["15", "esm-tcav"]
    import hashlib

    assert first[1] == hashlib.md5(b"MKVLAGWYHHKLAGE").hexdigest()
    assert read_interproscan_tsv(path, analyses=["esm-tcav"]).spans == {
        "P1": [Span(3, 9, "zf"), Span(12, 14, "zf")],
        "Q2": [Span(1, 4, "zf")],
    }
