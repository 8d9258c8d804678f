"""One protein-ID rule for FASTA, JSONL and TMbed (io.readers.record_id, README "Protein IDs")."""

from __future__ import annotations

import json

import pytest

from esm_tcav.io.readers import read_fasta, read_jsonl, read_tmbed, record_id

SEQ = "MKVLAGWYHH"


@pytest.mark.parametrize(
    "header, expected",
    [
        ("sp|P12345|ZNF1_HUMAN Zinc finger 1", "P12345"),
        ("tr|A0A0E2|A0A0E2_X", "A0A0E2"),
        ("P12345 description", "P12345"),
    ],
)
def test_the_same_header_gives_the_same_id_in_every_format(tmp_path, header, expected):
    fasta = tmp_path / "a.fasta"
    fasta.write_text(f">{header}\n{SEQ}\n")
    jsonl = tmp_path / "a.jsonl"
    jsonl.write_text(json.dumps({"accession": header, "sequence": SEQ}) + "\n")
    tmbed = tmp_path / "a.txt"
    tmbed.write_text(f">{header}\n{SEQ}\n{'1' * len(SEQ)}\n")
    ids = {read_fasta(fasta)[0].id, read_jsonl(jsonl)[0].id, read_tmbed(tmbed)[0].id}
    assert ids == {expected}


def test_tmbed_keeps_its_first_field_and_fasta_keeps_other_pipes_whole():
    assert record_id("6hu9_i|P07255|COX9_YEAST", tmbed=True) == "6hu9_i"
    assert record_id("gi|123|ref|NP_1| x") == "gi|123|ref|NP_1|"
    assert record_id("   ") == ""
