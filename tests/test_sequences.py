"""Tests for the sequence readers: formats, normalization, and one-line validation errors."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from esm_tcav.errors import InputError
from esm_tcav.io.proteins import (
    Protein,
    Span,
    normalize_sequence,
    sequence_hash,
    spans_from_positions,
)
from esm_tcav.io.readers import (
    attach_spans,
    read_fasta,
    read_jsonl,
    read_pdna,
    read_proteins,
    read_span_file,
    read_tmbed,
    read_uniprot_dat,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "data"
DEMO = ROOT / "data" / "demo"
LIBRARY = ROOT / "data" / "library"
C2H2 = re.compile(r"C.{2,4}C.{12}H.{3,5}H")
PS00028 = re.compile(r"C.{2,4}C.{3}[LIVMFYWC].{8}H.{3,5}H")


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(func, *args, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        func(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, "errors must be one line"
    return message


# ------------------------------------------------------------------------------------------
# data classes
# ------------------------------------------------------------------------------------------


def test_span_and_protein_basics():
    span = Span(2, 4, "motif")
    assert span.length == 3
    protein = Protein("P1", "MKVLA", [span, Span(5, 5, "other")])
    assert isinstance(protein.spans, tuple)
    assert protein.length == 5
    assert protein.spans_named("motif") == (span,)
    assert protein.span_names == ("motif", "other")
    assert protein.seq_hash == hashlib.sha256(b"MKVLA").hexdigest()[:20]
    assert protein.seq_hash == sequence_hash("MKVLA") and len(protein.seq_hash) == 20
    np.testing.assert_array_equal(protein.residue_mask("motif"), [0, 1, 1, 1, 0])
    np.testing.assert_array_equal(protein.residue_mask(), [0, 1, 1, 1, 1])
    with pytest.raises(dataclasses.FrozenInstanceError):
        protein.id = "P2"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("start", "end", "needle"),
    [(0, 3, "below 1"), (5, 3, "start > end")],
)
def test_span_rejects_bad_coordinates(start, end, needle):
    assert needle in error_of(Span, start, end, "x")


def test_protein_rejects_span_past_end_and_bad_residues():
    assert "ends past the sequence end" in error_of(Protein, "P1", "MKV", (Span(2, 4, "x"),))
    assert "'#'" in error_of(Protein, "P1", "MK#")
    assert "empty ID" in error_of(Protein, "", "MK")


def test_spans_from_positions_merges_runs():
    spans = spans_from_positions([7, 1, 2, 3, 9, 8, 12], "b")
    assert [(s.start, s.end) for s in spans] == [(1, 3), (7, 9), (12, 12)]
    assert spans_from_positions([], "b") == []


# ------------------------------------------------------------------------------------------
# normalization
# ------------------------------------------------------------------------------------------


def test_normalize_reports_every_change():
    seq, notes = normalize_sequence(" mk-vL.A\tGU x*\n", "f.fa:3: record 'P1'")
    assert seq == "MKVLAGUX"
    text = " | ".join(notes)
    assert all(n.startswith("f.fa:3: record 'P1': ") for n in notes)
    assert "whitespace" in text and "trailing stop" in text
    assert "uppercased 4 lowercase" in text
    assert "2 alignment gap" in text
    assert "U: 1" in text and "X: 1" in text


def test_normalize_keeps_clean_sequence_silently():
    assert normalize_sequence("MKVLA", "x") == ("MKVLA", [])
    seq, notes = normalize_sequence("MBZOUX", "x")
    assert seq == "MBZOUX" and len(notes) == 1 and "kept non-standard" in notes[0]


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ("MK#V", "character '#' (position 3)"),
        ("MK_V", "character '_' (position 3)"),
        ("MK*V", "character '*'"),
        ("MKV**", "character '*'"),
        ("1MK", "character '1'"),
        ("*", "empty"),
        ("--", "empty"),
    ],
)
def test_normalize_rejects(raw, needle):
    """Only what is no letter at all is refused when reading; a letter a model has no token for
    (J for ESM-2) is refused by that model at embed time (tests/test_backends.py)."""
    message = error_of(normalize_sequence, raw, "data/x.fasta:17: record 'P1'")
    assert message.startswith("data/x.fasta:17: record 'P1': ")
    assert needle in message


# ------------------------------------------------------------------------------------------
# FASTA
# ------------------------------------------------------------------------------------------


def test_read_fasta_multiline_uniprot_header_and_notes(tmp_path, caplog):
    path = write(
        tmp_path,
        "a.fasta",
        ">sp|P12345|TEST_HUMAN Test protein OS=Homo sapiens\nMKV\nlaG*\n\n"
        ">plain description here\nMK-V\n>tr|A0A000|X_Y\nMUX\n",
    )
    with caplog.at_level(logging.INFO, logger="esm_tcav.io.readers"):
        proteins = read_fasta(path)
    assert [p.id for p in proteins] == ["P12345", "plain", "A0A000"]
    assert [p.sequence for p in proteins] == ["MKVLAG", "MKV", "MUX"]
    assert all(p.spans == () for p in proteins)
    log = caplog.text
    assert f"{path}:1: record 'P12345': uppercased 2 lowercase" in log
    assert "trailing stop" in log and "alignment gap" in log and "U: 1" in log


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("", "file is empty"),
        ("\n  \n", "file is empty"),
        ("MKV\n>P1\nMKV\n", ":1: sequence line before the first '>' header"),
        (">\nMKV\n", ":1: header has no record ID"),
        (">P1\nMKV\n>P1\nMKV\n", ":3: record 'P1': duplicate record ID (first at line 1)"),
        (">P1\n>P2\nMKV\n", ":1: record 'P1': empty sequence"),
        (
            ">P1\nMKV\nMK#V\n",
            ":3: record 'P1': character '#' is not a residue letter; "
            "remove it or replace it with X",
        ),
        (">P1\nMK*V\n", ":1: record 'P1': character '*'"),
    ],
)
def test_read_fasta_errors_name_file_line_and_record(tmp_path, text, needle):
    path = write(tmp_path, "bad.fasta", text)
    message = error_of(read_fasta, path)
    assert message.startswith(str(path))
    assert needle in message


def test_missing_file_and_non_utf8(tmp_path):
    assert "file not found" in error_of(read_fasta, tmp_path / "nope.fasta")
    path = tmp_path / "latin1.fasta"
    path.write_bytes(b">P1\nMKV\n>P\xe9\nMKV\n")
    assert f"{path}:3: is not UTF-8 text" in error_of(read_fasta, path)


def test_gzip_fasta(tmp_path):
    path = tmp_path / "a.fasta.gz"
    path.write_bytes(gzip.compress(b">P1\nMKV\n"))
    assert read_proteins(path)[0].sequence == "MKV"


# ------------------------------------------------------------------------------------------
# JSONL
# ------------------------------------------------------------------------------------------


def jsonl(*records) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records)


def test_read_jsonl_spans_and_name_fallback(tmp_path):
    path = write(
        tmp_path,
        "a.jsonl",
        jsonl(
            {
                "accession": "P1",
                "sequence": "MKVLAGCCHH",
                "ground_truth_annotations": [
                    {"motif_id": "C2H2", "start": 2, "end": 4, "name": "zf"},
                    {"motif_id": "C2H2", "start": 7, "end": 10},
                ],
            },
            "",
            {"accession": "P2", "sequence": "mkv"},
            {"id": "P3", "sequence": "MK-V", "ground_truth_annotations": []},
        ),
    )
    p1, p2, p3 = read_jsonl(path)
    assert p1.spans == (Span(2, 4, "zf"), Span(7, 10, "C2H2"))
    assert (p2.id, p2.sequence, p2.spans) == ("P2", "MKV", ())
    assert (p3.id, p3.sequence) == ("P3", "MKV")


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('{"accession": "P1", "sequence": "MKV"', ":1: malformed JSON"),
        ("[1, 2]", ":1: line is not a JSON object"),
        ('{"sequence": "MKV"}', ":1: missing key 'accession'"),
        ('{"accession": "", "sequence": "MKV"}', ":1: 'accession' is empty"),
        ('{"accession": "P1"}', ":1: record 'P1': missing key 'sequence'"),
        ('{"accession": "P1", "sequence": ""}', ":1: record 'P1': empty sequence"),
        ('{"accession": "P1", "sequence": "MK#"}', ":1: record 'P1': character '#'"),
        (
            '{"accession": "P1", "sequence": "MKV", "ground_truth_annotations": [{"end": 2, '
            '"name": "a"}]}',
            "record 'P1': annotation 1 has no 'start'",
        ),
        (
            '{"accession": "P1", "sequence": "MKV", "ground_truth_annotations": [{"start": 1, '
            '"end": 2}]}',
            "record 'P1': annotation 1 has no 'name' or 'motif_id'",
        ),
        (
            '{"accession": "P1", "sequence": "MKV", "ground_truth_annotations": [{"start": 3, '
            '"end": 2, "name": "a"}]}',
            "record 'P1': span 3-2 is reversed (start > end)",
        ),
        (
            '{"accession": "P1", "sequence": "MKV", "ground_truth_annotations": [{"start": 2, '
            '"end": 4, "name": "a"}]}',
            "record 'P1': span 2-4 ends past the sequence end (length 3)",
        ),
        (
            '{"accession": "P1", "sequence": "MKV", "ground_truth_annotations": [{"start": 0, '
            '"end": 2, "name": "a"}]}',
            "record 'P1': span 0-2 starts below 1",
        ),
        (
            '{"accession": "P1", "sequence": "MKV", "ground_truth_annotations": [{"start": "1", '
            '"end": 2, "name": "a"}]}',
            "'start' is '1', not an integer",
        ),
        (
            '{"accession": "P1", "sequence": "MK-V", "ground_truth_annotations": [{"start": 1, '
            '"end": 2, "name": "a"}]}',
            "record 'P1': the sequence contains alignment gaps",
        ),
        (
            '{"accession": "P1", "sequence": "MKV", "ground_truth_annotations": {"start": 1}}',
            "'ground_truth_annotations' is not a list",
        ),
    ],
)
def test_read_jsonl_errors(tmp_path, line, needle):
    path = write(tmp_path, "bad.jsonl", line + "\n")
    message = error_of(read_jsonl, path)
    assert message.startswith(f"{path}:1: ")
    assert needle in message


def test_read_jsonl_duplicate_and_line_numbers(tmp_path):
    path = write(
        tmp_path,
        "dup.jsonl",
        jsonl({"accession": "P1", "sequence": "MKV"}, "", {"accession": "P1", "sequence": "MKV"}),
    )
    assert f"{path}:3: record 'P1': duplicate record ID (first at line 1)" in error_of(
        read_jsonl, path
    )
    path = write(tmp_path, "bad2.jsonl", jsonl({"accession": "P1", "sequence": "MKV"}, "{oops"))
    assert f"{path}:2: malformed JSON" in error_of(read_jsonl, path)


# ------------------------------------------------------------------------------------------
# span files
# ------------------------------------------------------------------------------------------


def test_span_file_roundtrip(tmp_path):
    path = write(
        tmp_path, "spans.tsv", "# accession start end name\nP1\t2\t4\tzf\nP1\t6\t7\n\nP2\nP2\n"
    )
    spans = read_span_file(path)
    assert spans == {"P1": [Span(2, 4, "zf"), Span(6, 7, "")], "P2": []}
    proteins = [
        Protein("P1", "MKVLAGC"),
        Protein("P2", "MK"),
        Protein("P3", "MKV", (Span(1, 1, "old"),)),
    ]
    out = attach_spans(proteins, spans, default_name="concept", source=path)
    assert out[0].spans == (Span(2, 4, "zf"), Span(6, 7, "concept"))
    assert out[1].spans == () and out[2] is proteins[2]
    assert proteins[0].spans == ()  # originals untouched


def test_span_file_whitespace_separated(tmp_path):
    path = write(tmp_path, "spans.txt", "P1 2 4 my motif\n")
    assert read_span_file(path) == {"P1": [Span(2, 4, "my motif")]}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("P1\t2\n", ":1: record 'P1': a start without an end"),
        ("P1\ta\t4\n", ":1: record 'P1': start/end 'a'/'4' are not integers"),
        ("P1\t5\t4\n", ":1: record 'P1': span 5-4 is reversed"),
        ("P1\t0\t4\n", ":1: record 'P1': span 0-4 starts below 1"),
        ("P1\t1\t2\tn\textra\n", ":1: record 'P1': 5 columns"),
        ("P1\nP1\t1\t2\n", ":2: record 'P1': has spans here but is listed as a whole protein"),
        ("P1\t1\t2\nP1\n", ":2: record 'P1': listed as a whole protein here but with spans"),
        ("# only a comment\n", "no spans or accessions found"),
    ],
)
def test_span_file_errors(tmp_path, text, needle):
    path = write(tmp_path, "bad.tsv", text)
    message = error_of(read_span_file, path)
    assert message.startswith(str(path)) and needle in message


def test_attach_spans_errors(tmp_path):
    proteins = [Protein("P1", "MKV")]
    message = error_of(attach_spans, proteins, {"P9": []}, "c", source="s.tsv")
    assert message.startswith("s.tsv: record 'P9': is not among the 1 sequences")
    message = error_of(attach_spans, proteins, {"P1": [Span(2, 9, "")]}, "c", source="s.tsv")
    assert message.startswith("s.tsv: record 'P1': span 2-9 ends past the sequence end")


# ------------------------------------------------------------------------------------------
# TMbed
# ------------------------------------------------------------------------------------------

TMBED = (
    ">Q1|EUKARYA|SP|1\nMKVLAGCWYF\nSSS222HHh1\n"
    ">5abc_A|P99999|NAME\nMKVLAG\nUBBB22\n"
    ">Q3|EUKARYA|NO_SP|0\nmkv\n111\n"
)


def test_read_tmbed_spans(tmp_path):
    proteins = read_tmbed(write(tmp_path, "t.txt", TMBED))
    assert [p.id for p in proteins] == ["Q1", "5abc_A", "Q3"]
    assert proteins[0].spans == (Span(1, 3, "signal_peptide"), Span(7, 9, "transmembrane_helix"))
    assert proteins[1].spans == (Span(2, 4, "transmembrane_beta"),)
    assert proteins[2].spans == () and proteins[2].sequence == "MKV"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (
            ">Q1\nMKV\n11\n",
            ":3: record 'Q1': label string has 2 characters but the sequence has 3 residues",
        ),
        (">Q1\nMKV\n1X1\n", ":3: record 'Q1': label 'X' is not a TMbed label"),
        (">Q1\nMKV\n", ":1: record 'Q1': record is incomplete"),
        (">Q1\nMKV\n>Q2\nMKV\n111\n", ":1: record 'Q1': record is incomplete"),
        ("MKV\n111\n>Q1\n", ":1: expected a '>' header line"),
        (">Q1\nMK#\n111\n", ":2: record 'Q1': character '#'"),
        (">Q1\nMKV\n111\n>Q1|x\nMKV\n111\n", ":4: record 'Q1': duplicate record ID"),
    ],
)
def test_read_tmbed_errors(tmp_path, text, needle):
    path = write(tmp_path, "bad.txt", text)
    message = error_of(read_tmbed, path)
    assert message.startswith(str(path)) and needle in message


# ------------------------------------------------------------------------------------------
# UniProt flat file
# ------------------------------------------------------------------------------------------

UNIPROT = """\
ID   TEST_HUMAN              Reviewed;          30 AA.
AC   P11111; Q22222;
AC   Q33333;
DE   RecName: Full=Test;
FT   SIGNAL          1..5
FT                   /evidence="ECO:0000255"
FT   ZN_FING         8..20
FT                   /note="C2H2-type 1"
FT   BINDING         12
FT   DOMAIN          <1..10
FT   REGION          25..>30
FT   VAR_SEQ         P11111-2:3..9
FT   MOD_RES         ?
SQ   SEQUENCE   30 AA;  3000 MW;  0000000000000000 CRC64;
     MKVLAGCWYF MKVLAGCWYF MKVLAGCWYF
//
ID   OLD_HUMAN               Reviewed;          12 AA.
AC   P44444;
FT   TRANSMEM      3      9       Helical.
FT   METAL         5      5       Zinc.
FT   CHAIN        <1     12       Something.
SQ   SEQUENCE   12 AA;  1200 MW;  0000000000000000 CRC64;
     MKVLAGCWYF MK
//
"""


def test_read_uniprot_dat_features(tmp_path, caplog):
    path = write(tmp_path, "u.dat", UNIPROT)
    with caplog.at_level(logging.INFO, logger="esm_tcav.io.readers"):
        first, old = read_uniprot_dat(path)
    assert first.id == "P11111" and first.length == 30
    assert first.spans == (Span(1, 5, "SIGNAL"), Span(8, 20, "ZN_FING"), Span(12, 12, "BINDING"))
    assert "skipped 5 feature(s)" in caplog.text
    assert "whitespace" not in caplog.text  # SQ block spacing is layout, not a change
    assert old.id == "P44444"
    assert old.spans == (Span(3, 9, "TRANSMEM"), Span(5, 5, "METAL"))
    only = read_uniprot_dat(path, features={"ZN_FING", "TRANSMEM"})
    assert [s.name for p in only for s in p.spans] == ["ZN_FING", "TRANSMEM"]


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        (
            "     MKVLAGCWYF MKVLAGCWYF MKVLAGCWYF\n",
            "     MKVLAGCWYF MKVLAGCWYF MKVLAGCWY\n",
            ":14: record 'P11111': sequence has 29 residues but the ID line says 30 AA",
        ),
        (
            "FT   BINDING         12\n",
            "FT   BINDING         40\n",
            ":9: record 'P11111': span 40-40 ends past the sequence end (length 30)",
        ),
        (
            "FT   BINDING         12\n",
            "FT   BINDING         14..12\n",
            ":9: record 'P11111': span 14-12 is reversed",
        ),
        (
            "     MKVLAGCWYF MKVLAGCWYF MKVLAGCWYF\n",
            "     MKVLAGCWYF MKVLAGCWYF MKVLAGCWY#\n",
            ":15: record 'P11111': character '#'",
        ),
        ("AC   P44444;\n", "AC   P11111;\n", ":17: record 'P11111': duplicate entry"),
    ],
)
def test_read_uniprot_dat_errors(tmp_path, old, new, needle):
    path = write(tmp_path, "bad.dat", UNIPROT.replace(old, new, 1))
    message = error_of(read_uniprot_dat, path)
    assert message.startswith(str(path)) and needle in message


def test_read_uniprot_dat_truncated(tmp_path):
    path = write(tmp_path, "cut.dat", UNIPROT.rsplit("//", 1)[0])
    assert "record 'P44444': entry is not terminated by '//'" in error_of(read_uniprot_dat, path)
    path = write(tmp_path, "junk.dat", "hello\n" + UNIPROT)
    assert f"{path}:1: line outside an entry" in error_of(read_uniprot_dat, path)


# ------------------------------------------------------------------------------------------
# PDNA
# ------------------------------------------------------------------------------------------


def test_read_pdna_merges_consecutive_residues(tmp_path):
    seqs = write(tmp_path, "s.fasta", ">1ABC_A\nMKVLAGCWYF\n>2XYZ_B\nMKV\n")
    labels = write(tmp_path, "l.fasta", ">1ABC_A\n1 2 3 7 9 10 \n>2XYZ_B\n2\n")
    a, b = read_pdna(seqs, labels)
    assert a.spans == (
        Span(1, 3, "dna_binding"),
        Span(7, 7, "dna_binding"),
        Span(9, 10, "dna_binding"),
    )
    assert b.spans == (Span(2, 2, "dna_binding"),)


@pytest.mark.parametrize(
    ("labels", "needle"),
    [
        (">P1\n1 5\n", ":1: record 'P1': residue index 5 is outside the sequence (length 3)"),
        (">P1\n0\n", "residue index 0 is outside the sequence"),
        (">P1\n1 x\n", ":2: record 'P1': 'x' is not a residue index"),
        (">P1\n1\n>P9\n1\n", ":3: record 'P9': is not in"),
        ("1 2\n", ":1: residue indices before the first '>' header"),
    ],
)
def test_read_pdna_errors(tmp_path, labels, needle):
    seqs = write(tmp_path, "s.fasta", ">P1\nMKV\n")
    path = write(tmp_path, "l.fasta", labels)
    message = error_of(read_pdna, seqs, path)
    assert message.startswith(str(path)) and needle in message


def test_read_pdna_missing_label_record(tmp_path):
    seqs = write(tmp_path, "s.fasta", ">P1\nMKV\n>P2\nMKV\n")
    labels = write(tmp_path, "l.fasta", ">P1\n1\n")
    assert "record 'P2': has no label record" in error_of(read_pdna, seqs, labels)


# ------------------------------------------------------------------------------------------
# dispatch
# ------------------------------------------------------------------------------------------


def test_read_proteins_dispatch(tmp_path):
    fasta = write(tmp_path, "a.fa", ">P1\nMKV\n")
    assert read_proteins(fasta)[0].id == "P1"
    assert (
        read_proteins(write(tmp_path, "a.jsonl", jsonl({"accession": "J", "sequence": "M"})))[0].id
        == "J"
    )
    tm = write(tmp_path, "tm.fasta", TMBED)  # TMbed files often carry a .fasta extension
    assert read_proteins(tm)[0].spans[0].name == "signal_peptide"
    assert read_proteins(write(tmp_path, "u.txt", UNIPROT))[0].id == "P11111"
    assert read_proteins(write(tmp_path, "u.dat", UNIPROT))[1].id == "P44444"
    assert read_proteins(write(tmp_path, "x.seqs", ">P1\nMKV\n"), fmt="fasta")[0].id == "P1"
    assert read_proteins(write(tmp_path, "x.any", TMBED), fmt="tmbed")[1].id == "5abc_A"
    assert "unknown format 'genbank'" in error_of(read_proteins, fasta, fmt="genbank")
    assert "cannot tell the sequence format" in error_of(
        read_proteins, write(tmp_path, "x.bin", "LOCUS xyz\n")
    )


# ------------------------------------------------------------------------------------------
# committed real-data slices and fixtures
# ------------------------------------------------------------------------------------------


def test_fixtures_cut_from_real_files():
    zf = read_proteins(FIXTURES / "zinc_fingers_3.jsonl")
    assert len(zf) == 3 and all(p.spans_named("C2H2_zinc_finger") for p in zf)
    assert len(read_proteins(FIXTURES / "negatives_3.fasta")) == 3
    tm = read_proteins(FIXTURES / "tmbed_4.txt")
    assert [p.span_names for p in tm] == [
        ("transmembrane_helix",),
        ("signal_peptide",),
        ("transmembrane_beta",),
        (),
    ]
    pdna = read_pdna(FIXTURES / "pdna_3_sequence.fasta", FIXTURES / "pdna_3_label.fasta")
    assert [p.id for p in pdna] == ["2N21_A", "4Z3C_C", "2MXF_A"]
    assert pdna[0].spans[0] == Span(3, 3, "dna_binding")
    uni = {p.id: p for p in read_proteins(FIXTURES / "uniprot_4.dat")}
    assert set(uni) == {"A0A0E2CV74", "A0A1Q9NR16", "P14592", "Q80WC7"}
    assert uni["A0A0E2CV74"].spans_named("SIGNAL") == (Span(1, 22, "SIGNAL"),)
    assert uni["Q80WC7"].spans_named("ZN_FING")
    assert uni["A0A1Q9NR16"].spans_named("TRANSMEM")


def test_demo_zinc_fingers_and_negatives():
    positives = read_proteins(DEMO / "zinc_fingers.jsonl")
    negatives = read_proteins(DEMO / "negatives.fasta")
    assert len(positives) == len(negatives) == 100
    assert len({p.id for p in positives} | {n.id for n in negatives}) == 200
    for protein in positives:
        spans = protein.spans_named("C2H2_zinc_finger")
        assert spans and len(spans) == len(protein.spans)
        for span in spans:
            assert C2H2.fullmatch(protein.sequence[span.start - 1 : span.end]), (protein.id, span)
        assert protein.length <= 700
    assert not any(PS00028.search(n.sequence) for n in negatives)
    pos_len = sorted(p.length for p in positives)
    neg_len = sorted(n.length for n in negatives)
    assert max(abs(a - b) for a, b in zip(pos_len, neg_len, strict=True)) <= 5


def test_library_slices():
    train = read_proteins(LIBRARY / "tmbed_train.txt")
    test = read_proteins(LIBRARY / "tmbed_test.txt")
    assert (len(train), len(test)) == (120, 60)
    assert not {p.id for p in train} & {p.id for p in test}
    for split in (train, test):
        names = [p.span_names for p in split]
        assert any("transmembrane_helix" in n for n in names)
        assert any("signal_peptide" in n for n in names)
        assert any(n == () for n in names)
        assert max(p.length for p in split) <= 600
    pdna_train = read_pdna(
        LIBRARY / "pdna_train_sequence.fasta", LIBRARY / "pdna_train_label.fasta"
    )
    pdna_test = read_pdna(LIBRARY / "pdna_test_sequence.fasta", LIBRARY / "pdna_test_label.fasta")
    assert (len(pdna_train), len(pdna_test)) == (120, 41)
    assert all(p.spans and p.length <= 600 for p in pdna_train)
    uniprot = {p.id: p for p in read_proteins(LIBRARY / "uniprot_entries.dat")}
    assert len(uniprot) == 67
    assert len(uniprot["Q03112"].spans_named("ZN_FING")) == 10
    assert (LIBRARY / "zf_c2h2_pfam_seed.sto").read_text().startswith("# STOCKHOLM")
    for folder in (DEMO, LIBRARY):
        assert (folder / "PROVENANCE.md").is_file()
        assert list(folder.glob("LICENSE.*"))
    total = sum(p.stat().st_size for p in (ROOT / "data").rglob("*") if p.is_file())
    assert total < 4_000_000  # demo, library and the versioned benchmark slices
