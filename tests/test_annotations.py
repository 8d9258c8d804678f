"""Annotation files as concepts: the readers on real lines, the sampling helpers, and a library of
three Pfam concepts built from one InterProScan TSV slice with the tiny model.

Fixtures in tests/data/annotations/ are real lines (see its README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from esm_tcav.cli import app
from esm_tcav.concepts.library import INDEX, load_library
from esm_tcav.engine.store import EmbeddingStore
from esm_tcav.errors import ConfigError, InputError
from esm_tcav.io.annotations import (
    read_binding_residues,
    read_domtblout,
    read_flip,
    read_interproscan_tsv,
)
from esm_tcav.io.proteins import Protein
from esm_tcav.io.readers import read_fasta
from esm_tcav.localize.scan import run_scan
from esm_tcav.run.annotations import concepts_from_proteins, read_annotated
from esm_tcav.run.sampling import group_split, kmer_clusters, length_matched

DATA = Path(__file__).parent / "data" / "annotations"
LIB_DATA = Path(__file__).parent / "data"


def _bad(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# ---------------------------------------------------------------------- readers


def test_interproscan_tsv_real_lines():
    ann = read_interproscan_tsv(DATA / "ips_slice.tsv", ["Pfam"])
    # `tr|ACC|NAME` becomes ACC, as the FASTA reader names the record
    assert all("|" not in pid for pid in ann.spans)
    first = (DATA / "ips_slice.tsv").read_text().splitlines()[0].split("\t")
    pid = first[0].split("|")[1]
    span = ann.spans[pid][0]
    assert (span.start, span.end, span.name) == (int(first[6]), int(first[7]), first[4])
    assert ann.descriptions[first[4]] == first[5]
    assert len(ann.proteins_with("PF00440")) == 11
    with pytest.raises(InputError, match="no match rows"):
        read_interproscan_tsv(DATA / "ips_slice.tsv", ["Phobius"])


def test_interproscan_bad_lines_name_file_and_line(tmp_path):
    good = (DATA / "ips_slice.tsv").read_text().splitlines()[:2]
    cols = good[1].split("\t")
    cols[6] = "x12"
    path = _bad(tmp_path, "bad.tsv", "\n".join([good[0], "\t".join(cols)]) + "\n")
    with pytest.raises(InputError, match=r"bad\.tsv:2: record '.+': start 'x12' is not an integer"):
        read_interproscan_tsv(path)
    path = _bad(tmp_path, "short.tsv", good[0] + "\nP1\tonly\tthree\n")
    with pytest.raises(InputError, match=r"short\.tsv:2: 3 tab-separated columns"):
        read_interproscan_tsv(path)
    cols = good[0].split("\t")
    cols[7] = str(int(cols[2]) + 5)  # end past the protein length
    path = _bad(tmp_path, "range.tsv", "\t".join(cols) + "\n")
    with pytest.raises(InputError, match=r"range\.tsv:1: .*ends past the sequence end"):
        read_interproscan_tsv(path)


def test_domtblout_real_lines(tmp_path):
    ann = read_domtblout(DATA / "zf_c2h2.domtblout")
    assert set(ann.spans) == {"A2RRD8", "A0PJY2", "A6NGD5"}
    # envelope coordinates (columns 20-21) of the second A2RRD8 domain
    assert ann.spans["A2RRD8"][1].start == 161 and ann.spans["A2RRD8"][1].end == 183
    # named by the profile accession without its version, as InterProScan names it
    assert ann.spans["A2RRD8"][0].name == "PF00096"
    assert ann.descriptions["PF00096"] == "zf-C2H2"
    strict = read_domtblout(DATA / "zf_c2h2.domtblout", max_evalue=1e-3)
    assert sum(map(len, strict.spans.values())) < sum(map(len, ann.spans.values()))
    lines = (DATA / "zf_c2h2.domtblout").read_text().splitlines()
    cols = lines[4].split()
    cols[19] = "abc"  # envelope start
    lines[4] = " ".join(cols)
    path = _bad(tmp_path, "bad.domtblout", "\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"bad\.domtblout:5: record 'A2RRD8'"):
        read_domtblout(path)


def test_binding_residues_and_flip_real_lines(tmp_path):
    ann = read_binding_residues(DATA / "bindpredict_metal_3.txt", "metal")
    line = (DATA / "bindpredict_metal_3.txt").read_text().splitlines()[0]
    pid, positions = line.split("\t")
    got = {i for s in ann.spans[pid] for i in range(s.start, s.end + 1)}
    assert got == {int(x) for x in positions.split(",")}
    path = _bad(tmp_path, "bad.txt", line + "\nP2\t3,x,5\n")
    with pytest.raises(InputError, match=r"bad\.txt:2: record 'P2': position 'x'"):
        read_binding_residues(path, "metal")
    flip = read_flip(
        DATA / "flip_3_sequences.fasta", DATA / "flip_3_sampled.fasta", DATA / "flip_3_mask.fasta"
    )
    labels = (DATA / "flip_3_sampled.fasta").read_text().splitlines()[1]
    mask = (DATA / "flip_3_mask.fasta").read_text().splitlines()[1]
    helix = flip[0].residue_mask("helix")
    want = np.array([c == "H" and m == "1" for c, m in zip(labels, mask, strict=True)])
    assert np.array_equal(helix, want)
    strand = flip[0].residue_mask("strand")
    want = [c == "E" and m == "1" for c, m in zip(labels, mask, strict=True)]
    assert np.array_equal(strand, want)
    text = (DATA / "flip_3_sampled.fasta").read_text().splitlines()
    text[1] = text[1][:-3]
    path = _bad(tmp_path, "lab.fasta", "\n".join(text) + "\n")
    with pytest.raises(InputError, match=r"lab\.fasta:1: record .*string length differs"):
        read_flip(DATA / "flip_3_sequences.fasta", path)


def test_uniprot_and_tmbed_as_annotation_sources():
    prots, _ = read_annotated(LIB_DATA / "uniprot_4.dat", "uniprot", features=["TRANSMEM"])
    assert {s.name for p in prots for s in p.spans} <= {"TRANSMEM"}
    prots, _ = read_annotated(LIB_DATA / "tmbed_4.txt")  # auto: TMbed 3-line records
    names = {s.name for p in prots for s in p.spans}
    assert {"transmembrane_helix", "signal_peptide"} <= names
    with pytest.raises(ConfigError, match="holds no sequences; give --sequences"):
        read_annotated(DATA / "ips_slice.tsv")


# ---------------------------------------------------------------------- sampling


def test_length_matched_negatives_follow_the_positives():
    rng = np.random.default_rng(0)
    pool = [Protein(f"N{i}", "A" * int(n)) for i, n in enumerate(rng.integers(20, 600, 300))]
    pos = [Protein(f"P{i}", "C" * n) for i, n in enumerate([100, 110, 400, 420])]
    got = length_matched(pool, pos, 8, seed=1)
    assert len(got) == 8 and len({p.id for p in got}) == 8
    lengths = sorted(len(p.sequence) for p in got)
    want = [100, 100, 110, 110, 400, 400, 420, 420]
    assert all(abs(x - y) <= 25 for x, y in zip(lengths, want, strict=True))
    assert got == length_matched(pool, pos, 8, seed=1)  # seeded


def test_kmer_clusters_keep_near_duplicates_together():
    rng = np.random.default_rng(1)
    alphabet = list("ACDEFGHIKLMNPQRSTVWY")
    base = ["".join(rng.choice(alphabet, 150)) for _ in range(6)]
    prots = []
    for i, s in enumerate(base):
        prots.append(Protein(f"A{i}", s))
        mutated = list(s)
        for j in rng.choice(150, 8, replace=False):  # ~95% identical copy
            mutated[j] = "W"
        prots.append(Protein(f"B{i}", "".join(mutated)))
    groups = kmer_clusters(prots)
    assert len(set(groups)) == 6
    assert all(groups[2 * i] == groups[2 * i + 1] for i in range(6))
    test = group_split([p.id for p in prots], groups, 0.34, seed=0)
    for i in range(6):
        assert (f"A{i}" in test) == (f"B{i}" in test)
    assert 2 <= len(test) <= 6


def test_concepts_negatives_never_carry_the_entry():
    prots, desc = read_annotated(DATA / "ips_slice.tsv", sequences=DATA / "ips_slice.faa")
    concepts = concepts_from_proteins(prots, min_proteins=8, descriptions=desc, seed=0)
    by = {c.name: c for c in concepts}
    assert {"PF00440", "PF12833", "PF00730"} <= set(by)
    for c in concepts:
        carriers = {p.id for p in prots if any(s.name == c.entry for s in p.spans)}
        negs = {p.id for p in c.train_neg + c.test_neg}
        assert not negs & carriers
        assert {p.id for p in c.train_pos} & {p.id for p in c.test_pos} == set()
        assert all(s.name == c.entry for p in c.train_pos for s in p.spans)
    bg = read_fasta(DATA / "zf_c2h2_proteins.fasta")
    with_bg = concepts_from_proteins(
        prots, entries=["PF00440"], min_proteins=8, background=bg, negatives_per_positive=0.5
    )
    assert {p.id for p in with_bg[0].train_neg + with_bg[0].test_neg} <= {p.id for p in bg}


# ---------------------------------------------------------------------- library build


def test_library_from_one_interproscan_tsv(tmp_path, tiny_hf_folder, tiny_registry):
    settings = tmp_path / "settings.yaml"
    settings.write_text(
        yaml.safe_dump(
            {
                "seed": 0,
                "model": {
                    "name": "tiny_esm2",
                    "path": str(tiny_hf_folder),
                    "registry_file": str(tiny_registry),
                    "layers": [1, 2, 3],
                },
                "defaults": {
                    "embed": {"residue_dtype": "float32"},
                    "train": {"n_random": 9, "pca_components": 16, "folds": 3, "residue_cap": 1500},
                    "evaluate": {"bootstrap": 20},
                    "detect": {"heatmaps_top": 0, "heatmaps_random": 0},
                },
            }
        )
    )
    out = tmp_path / "lib"
    result = CliRunner().invoke(
        app,
        [
            "library", "build", str(DATA / "ips_slice.tsv"), "--out", str(out),
            "--sequences", str(DATA / "ips_slice.faa"), "--analysis", "Pfam",
            "--min-proteins", "8", "--max-positives", "9", "--split", "cluster",
            "--protein-level", "PF00440", "--settings", str(settings),
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    lib = load_library(out)
    assert {"PF00440", "PF12833", "PF00730", "PF00440_protein"} <= set(lib.names)
    doc = json.loads((out / INDEX).read_text())
    entry = next(e for e in doc["concepts"] if e["name"] == "PF00730")
    assert "k-mer cluster" in entry["provenance"]["split"]
    assert "HhH-GPD" in entry["provenance"]["source"]
    assert entry["metrics"]["q"] is not None
    protein_level = next(e for e in doc["concepts"] if e["name"] == "PF00440_protein")
    assert protein_level["metrics"]["granularity"] == "protein"
    report = (out / "report.md").read_text()
    assert "PF12833" in report
    # the library as a map: cosine between concept directions per layer, clustered
    sim = json.loads((out / "similarity.json").read_text())
    assert set(sim["layers"]) == {"1", "2", "3"} and set(sim["order"]) == set(lib.names)
    for layer in sim["layers"].values():
        cos = np.array(layer["cosine"])
        assert cos.shape == (len(lib.names),) * 2
        assert np.allclose(np.diag(cos), 1.0, atol=1e-3) and np.allclose(cos, cos.T)
        assert (np.abs(cos) <= 1.0 + 1e-6).all()
    assert (out / "similarity.png").stat().st_size > 1000
    assert "## Similarity map" in report and "most similar pairs" in report
    # scan ranks proteins by the protein-level concept: its mean_score is the CAV applied
    # to the mean-pooled protein (here checked against the library's stored mean states)
    run_scan(DATA / "ips_slice.faa", out, tmp_path / "scan", progress=False, include_weak=True)
    lines = (tmp_path / "scan" / "proteins.tsv").read_text().splitlines()
    head = lines[0].split("\t")
    assert "PF00440_protein:mean_score" in head
    col = head.index("PF00440_protein:mean_score")
    got = {r.split("\t")[0]: float(r.split("\t")[col]) for r in lines[1:]}
    concept = lib.concept("PF00440_protein")
    store = EmbeddingStore(out / "work" / "embeddings", doc["model"]["fingerprint"], "float32")
    checked = 0
    for p in read_fasta(DATA / "ips_slice.faa"):
        if store.has(p.seq_hash, concept.layer):
            want = float(store.mean(p.seq_hash, concept.layer) @ concept.cav.direction)
            assert got[p.id] == pytest.approx(want + concept.cav.bias, abs=2e-3)
            checked += 1
    assert checked >= 10


# ---------------------------------------------------------------------- run config: background


def test_run_config_with_positives_only_draws_background_negatives(tmp_path):
    from esm_tcav.config import config_from_dict
    from esm_tcav.run.dataset import load_dataset

    demo = Path(__file__).resolve().parents[1] / "data" / "demo" / "zinc_fingers.jsonl"
    pos_file = tmp_path / "pos.jsonl"
    pos_file.write_text("".join(demo.read_text().splitlines(keepends=True)[:6]))
    positives = [json.loads(x) for x in pos_file.read_text().splitlines()]
    bg = tmp_path / "bg.fasta"
    rng = np.random.default_rng(0)
    bg.write_text(  # the positives themselves (under other IDs) + 30 random proteins
        "".join(f">copy{i}\n{r['sequence']}\n" for i, r in enumerate(positives))
        + "".join(
            f">R{i}\n{''.join(rng.choice(list('ACDEFGHIKLMNPQRSTVWY'), int(n)))}\n"
            for i, n in enumerate(rng.integers(150, 900, 30))
        )
    )
    doc = {
        "seed": 3,
        "data": {
            "concept": "C2H2",
            "positives": str(pos_file),
            "background": str(bg),
            "negatives_per_positive": 2.0,
            "test_fraction": 0.34,
            "split": "cluster",
        },
    }
    with pytest.raises(ConfigError, match="one of negatives .a file. or background"):
        config_from_dict({**doc, "data": {**doc["data"], "negatives": "x.fasta"}}, "cfg")
    ds = load_dataset(config_from_dict(doc, "cfg"))
    pos_seqs = {p.sequence for p in ds.positives}
    assert len(ds.negatives) == 12
    assert not pos_seqs & {p.sequence for p in ds.negatives}  # never a positive, even renamed
    mean_pos = np.mean([len(p.sequence) for p in ds.positives])
    mean_neg = np.mean([len(p.sequence) for p in ds.negatives])
    assert abs(mean_pos - mean_neg) < 0.2 * mean_pos  # length-matched
    pos_ids = {p.id for p in ds.positives}
    assert ds.test_ids & pos_ids and ds.test_ids - pos_ids
    assert load_dataset(config_from_dict(doc, "cfg")).test_ids == ds.test_ids  # seeded
