"""Tests for the writers (GFF3, TSV, FASTA, JSONL), atomic writes and the streaming line reader."""

from __future__ import annotations

import gzip
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from esm_tcav.errors import InputError
from esm_tcav.io.files import atomic_write_lines, atomic_write_text, atomic_write_with, save_npy
from esm_tcav.io.proteins import Protein, Span
from esm_tcav.io.readers import (
    fasta_records,
    iter_fasta,
    iter_lines,
    read_fasta,
    read_jsonl,
    validate_fasta,
)
from esm_tcav.io.writers import (
    GFF3_HEADER,
    SPANS_TSV_HEADER,
    gff3_lines,
    span_tsv_lines,
    tsv_line,
    write_fasta,
    write_jsonl,
    write_table,
)
from esm_tcav.localize.scan import protein_lines
from esm_tcav.localize.spans import ScoredSpan

HOSTILE = "evil\tid\nwith;=%"


# ---------------------------------------------------------------------- GFF3


def test_gff3_lines_are_one_based_with_attributes():
    rows = [("sp|P1 x", ScoredSpan(3, 9, 1.23456)), ("P2", ScoredSpan(1, 5, -0.5))]
    lines = list(gff3_lines(rows, "C2H2 finger", 4, 0.25, "f1_max", "one-pass"))
    assert lines[0] == "##gff-version 3\n"
    cols = lines[1].rstrip("\n").split("\t")
    assert cols[:8] == ["sp|P1%20x", "esm-tcav", "polypeptide_region", "3", "9", "1.2346", ".", "."]
    attrs = dict(kv.split("=") for kv in cols[8].split(";"))
    assert attrs["Name"] == "C2H2 finger"
    assert attrs["layer"] == "4" and attrs["threshold"] == "0.25" and attrs["method"] == "f1_max"
    assert attrs["ID"] == "sp|P1 x_C2H2 finger_1"
    assert lines[2].split("\t")[3:5] == ["1", "5"]


def test_gff3_escapes_a_hostile_id():
    rows = [(HOSTILE, ScoredSpan(1, 2, 0.5)), (HOSTILE, ScoredSpan(4, 6, 0.5))]
    lines = list(gff3_lines(rows, "c", 1, 0.1, "m", "one-pass"))[1:]
    assert len(lines) == 2 and all(line.count("\t") == 8 for line in lines)
    seqid = lines[0].split("\t")[0]
    assert seqid == "evil%09id%0Awith%3B%3D%25"
    attrs = lines[1].rstrip("\n").split("\t")[8].split(";")
    assert attrs[0] == "ID=evil%09id%0Awith%3B%3D%25_c_2"  # ';' and '=' never split attributes


# ---------------------------------------------------------------------- TSV


def test_tsv_escapes_tabs_and_newlines_and_formats_numbers():
    line = tsv_line([HOSTILE, 3, 0.123456, None, np.float32(1.5)])
    assert line == "evil id with;=%\t3\t0.1235\t\t1.5000\n"


def test_detect_and_scan_write_the_same_span_line(tmp_path):
    """detect writes whole files from the writers' line generators; scan builds them per protein."""
    concept = SimpleNamespace(
        name="motif",
        layer=4,
        threshold=0.5,
        threshold_method="f1_max",
        smoothing_window=1,
        min_span_length=1,
        merge_gap=0,
        grade=None,
        calibration=None,
    )
    lib = SimpleNamespace(concepts=[concept])
    scores = np.array([0, 0, 1, 1, 1, 0, 0.9, 0], np.float32)[:, None]
    for pid in ("P12345", HOSTILE):
        prot = Protein(pid, "MKVLAGWY")
        gff, tsv, prow, counts = protein_lines(prot, scores, lib)
        spans = [ScoredSpan(3, 5, 1.0), ScoredSpan(7, 7, 0.9)]
        rows = [(pid, s) for s in spans]
        atomic_write_lines(tmp_path / "d.tsv", span_tsv_lines(rows, "motif", 4, 0.5, "f1_max"))
        detect_text = (tmp_path / "d.tsv").read_text()
        assert detect_text == SPANS_TSV_HEADER + tsv
        assert len(tsv.splitlines()) == 2 and all(
            len(line.split("\t")) == 10 for line in tsv.splitlines()
        )
        assert counts == [(2, 4)]
        assert prow.count("\n") == 1 and prow.split("\t")[1:] == ["8", "2", "1.0000", "0.4875\n"]
        detect_gff = gff3_lines(
            [(pid, s) for s in spans], "motif", 4, 0.5, "f1_max", "one-pass", lengths={pid: 8}
        )
        assert "".join(detect_gff) == GFF3_HEADER + gff
        assert gff.startswith(f"##sequence-region {gff.split()[1]} 1 8\n")
    assert (
        detect_text.splitlines()[1] == "evil id with;=%\t3\t5\t3\t1.0000\tmotif\t4\t0.5\tf1_max\t"
    )


def test_spans_tsv_for_normal_ids_keeps_its_bytes(tmp_path):
    rows = [("P1", ScoredSpan(3, 9, 1.23456)), ("Q9", ScoredSpan(1, 1, -0.5))]
    atomic_write_lines(tmp_path / "s.tsv", span_tsv_lines(rows, "C2H2", 4, 0.123456789, "f1_max"))
    assert (tmp_path / "s.tsv").read_text() == (
        "protein_id\tstart\tend\tlength\tscore\tconcept\tlayer\tthreshold\tmethod\tgrade\n"
        "P1\t3\t9\t7\t1.2346\tC2H2\t4\t0.123457\tf1_max\t\n"
        "Q9\t1\t1\t1\t-0.5000\tC2H2\t4\t0.123457\tf1_max\t\n"
    )
    graded = "".join(span_tsv_lines(rows[:1], "C2H2", 4, 0.5, "f1_max", False, grade="weak"))
    assert graded == "P1\t3\t9\t7\t1.2346\tC2H2\t4\t0.5\tf1_max\tweak\n"
    gff = "".join(gff3_lines(rows[:1], "C2H2", 4, 0.5, "f1_max", "one-pass", False, grade="weak"))
    assert gff.rstrip("\n").endswith(";mode=one-pass;grade=weak")
    write_table(tmp_path / "p.tsv", ["protein_id", "mean_iou"], [["P1", None], ["Q9", 0.25]])
    assert (tmp_path / "p.tsv").read_text() == "protein_id\tmean_iou\nP1\t\nQ9\t0.2500\n"


# ---------------------------------------------------------------------- FASTA / JSONL


def test_fasta_and_jsonl_writers_round_trip(tmp_path):
    proteins = [
        Protein("P1", "MKVLAG", (Span(2, 3, "a"), Span(5, 6, "b"))),
        Protein("P2", "WWXU"),
    ]
    write_fasta(tmp_path / "x.fasta", proteins)
    assert (tmp_path / "x.fasta").read_text() == ">P1\nMKVLAG\n>P2\nWWXU\n"
    assert [(p.id, p.sequence) for p in read_fasta(tmp_path / "x.fasta")] == [
        ("P1", "MKVLAG"),
        ("P2", "WWXU"),
    ]
    write_jsonl(tmp_path / "x.jsonl", proteins, ["a"])
    back = read_jsonl(tmp_path / "x.jsonl")
    assert back[0].spans == (Span(2, 3, "a"),) and back[1].spans == ()
    write_jsonl(tmp_path / "all.jsonl", proteins)
    assert read_jsonl(tmp_path / "all.jsonl")[0].spans == proteins[0].spans


# ---------------------------------------------------------------------- atomic writes


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_atomic_write_leaves_no_temp_file_on_failure(tmp_path):
    target = tmp_path / "out.tsv"
    atomic_write_text(target, "old\n")

    def half(tmp: Path) -> None:
        tmp.write_text("half a fi")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write_with(target, half)

    def lines():
        yield "a\n"
        raise RuntimeError("generator died")

    with pytest.raises(RuntimeError):
        atomic_write_lines(target, lines())
    assert _leftovers(tmp_path) == ["out.tsv"]
    assert target.read_text() == "old\n"


def test_save_npy_keeps_the_name(tmp_path):
    save_npy(tmp_path / "a.npy", np.arange(3, dtype=np.float32))
    assert _leftovers(tmp_path) == ["a.npy"]
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), [0, 1, 2])


# ---------------------------------------------------------------------- the streaming reader


@pytest.mark.parametrize(
    "text",
    [
        ">P1\nMKV\n>P2\nLA\n",
        ">P1\r\nMKV\r\n>P2\r\nLA",
        ">P1\rMKV\r>P2\rLA\r",
        ">P1\nMK\x0cV\n\n>P2\u2028LA\n",
    ],
)
def test_iter_lines_splits_like_splitlines(tmp_path, text):
    path = tmp_path / "a.fasta"
    path.write_bytes(text.encode())
    assert list(iter_lines(path)) == text.splitlines()


def test_streaming_reader_is_the_one_fasta_reader(tmp_path):
    path = tmp_path / "a.fasta.gz"
    path.write_bytes(gzip.compress(b">sp|P1|X d\nmkv*\n>b\nAC DE\n"))
    assert list(fasta_records(path)) == [("P1", 1, "mkv*"), ("b", 3, "AC DE")]
    assert validate_fasta(path) == (2, 7)
    assert [p.id for p in iter_fasta(path, 1)] == ["b"]
    assert [p.sequence for p in read_fasta(path)] == ["MKV", "ACDE"]
    dup = tmp_path / "dup.fasta"
    dup.write_text(">a\nMKV\n>a\nMKV\n")
    with pytest.raises(InputError, match=r"dup.fasta:3: record 'a': duplicate record ID \(first"):
        validate_fasta(dup)
    assert len(list(iter_fasta(dup, check=False))) == 2  # a second pass over a checked file


def test_streaming_reader_names_the_bad_line(tmp_path):
    path = tmp_path / "latin1.fasta.gz"
    body = b"".join(b">P%d\nMKV\n" % i for i in range(3000))  # past the first decode chunk
    path.write_bytes(gzip.compress(body + b">P\xe9\nMKV\n"))
    with pytest.raises(InputError, match=r"latin1.fasta.gz:6001: is not UTF-8 text"):
        validate_fasta(path)
    bad_gz = tmp_path / "bad.fasta.gz"
    bad_gz.write_bytes(b">P1\nMKV\n")
    with pytest.raises(InputError, match="is not a valid gzip file"):
        read_fasta(bad_gz)
    empty = tmp_path / "empty.fasta"
    empty.write_text("\n \n")
    with pytest.raises(InputError, match="file is empty"):
        validate_fasta(empty)
    with pytest.raises(InputError, match="is not a file"):
        read_fasta(tmp_path)
