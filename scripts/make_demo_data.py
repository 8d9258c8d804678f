#!/usr/bin/env python
"""Build the demo and concept-library data slices committed under data/ (and tests/data/).

Reproducible: fixed seed, sorted inputs, no network. Reads the public source files of the
development workspace (default ``../shared/data``; see data/*/PROVENANCE.md for their origin)::

    python scripts/make_demo_data.py --source /work/shared/data

Writes data/demo/ (C2H2 zinc-finger positives with spans + length-matched Swiss-Prot negatives),
data/library/ (TMbed, PDNA, Pfam seed and UniProt slices for more concepts) and tests/data/ (tiny
fixtures cut from the same files). Every output is checked after writing.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import statistics
from collections import defaultdict
from pathlib import Path

from esm_tcav.io.readers import fasta_records

SEED = 20240611
ROOT = Path(__file__).resolve().parents[1]

C2H2_WHOLE = re.compile(r"C.{2,4}C.{12}H.{3,5}H")
PS00028 = re.compile(r"C.{2,4}C.{3}[LIVMFYWC].{8}H.{3,5}H")

N_POSITIVES = 100
MAX_POSITIVE_LENGTH = 700
TMBED_PLAN = {  # class -> number of records (train:test = 2:1 within each class)
    "tm_helix": 66,
    "signal_peptide": 60,
    "tm_beta": 6,
    "globular": 48,
}
MAX_TMBED_LENGTH = 600
N_PDNA_TRAIN = 120
MAX_PDNA_LENGTH = 600
DATA_BUDGET_BYTES = 2_000_000

ESM_DBP = "github.com/wwzll123/ESM-DBP (MIT), commit 33ecd862, folder `dataset/`"
TMBED = "github.com/BernhoferM/TMbed (Apache-2.0), commit e87e5dd4"
KZFP = "github.com/PulverCyril/kzfp_annotation (MIT), commit 7f67e338"
UNIPROT_CORE = "github.com/ebi-uniprot/uniprot-core (Apache-2.0), commit 8389f36e"
UNIPROT_CREDIT = (
    "Sequences and annotations are UniProtKB records, (c) the UniProt Consortium, licensed under "
    "CC BY 4.0 (https://creativecommons.org/licenses/by/4.0/): credit UniProt "
    "(The UniProt Consortium, Nucleic Acids Res. 2023, 51:D523-D531)."
)


# ------------------------------------------------------------------------------------------
# small readers for the raw source formats (FASTA through the package's one reader)
# ------------------------------------------------------------------------------------------


def read_simple_fasta(path: Path) -> dict[str, str]:
    """Raw sequences keyed by ID, in file order (the package's FASTA reader, no clean-up)."""
    return {pid: raw for pid, _, raw in fasta_records(path)}


def read_label_fasta(path: Path) -> dict[str, str]:
    """Raw label lines (space-separated 1-based indices) keyed by ID, in file order."""
    records: dict[str, str] = {}
    current = None
    for line in path.read_text().splitlines():
        if line.startswith(">"):
            current = line[1:].split()[0]
            records[current] = ""
        elif line.strip():
            records[current] += line
    return records


def c2h2_fingers(csv_path: Path) -> tuple[dict[str, str], dict[str, list[tuple[int, int]]], dict]:
    """Whole-finger spans (1-based inclusive) per protein from ESM-DBP's zf_data_df.csv."""
    lines = csv_path.read_text().splitlines()
    header = lines[0].split(" ")
    sequences: dict[str, str] = {}
    by_window: dict[str, dict[int, tuple[int, int]]] = defaultdict(dict)
    stats = {
        "rows": 0,
        "duplicate_register_rows": 0,
        "offsets": defaultdict(int),
        "indices": defaultdict(set),
    }
    for line in lines[1:]:
        row = dict(zip(header, line.split(" "), strict=True))
        stats["rows"] += 1
        acc, seq, finger = row["prot_name_id"], row["prot_seq"], row["regular_expression"]
        window = int(row["zf_indx_start"])
        stats["indices"][acc].add(int(row["zf_index"]))
        assert sequences.setdefault(acc, seq) == seq, f"{acc}: sequence differs between rows"
        assert seq[window : int(row["zf_indx_end"])] == row["zf_seq"], f"{acc}: zf_seq mismatch"
        assert C2H2_WHOLE.fullmatch(finger), f"{acc}: {finger} does not match the C2H2 regex"
        # The finger starts 4 (or 6) residues before the 12-residue window: find it there.
        starts = [s for s in range(window - 8, window + 1) if s >= 0 and seq.startswith(finger, s)]
        assert len(starts) == 1, f"{acc}: finger {finger} not found uniquely near {window}"
        start = starts[0]
        stats["offsets"][window - start] += 1
        span = (start + 1, start + len(finger))  # 1-based inclusive
        previous = by_window[acc].get(window)
        if previous is not None:
            # 12 fingers are listed twice with two registers of the first cysteine (e.g.
            # CICPLC...H: C-x4-C and C-x2-C). Keep the C-x2-C register (window - 4), as the rest.
            stats["duplicate_register_rows"] += 1
            span = min(previous, span, key=lambda s: abs(window - (s[0] - 1) - 4))
        by_window[acc][window] = span
    fingers = {acc: sorted(spans.values()) for acc, spans in by_window.items()}
    for acc, spans in fingers.items():
        for (s1, e1), (s2, _e2) in zip(spans, spans[1:], strict=False):
            assert s2 > e1, f"{acc}: overlapping fingers {s1}-{e1} and {s2}"
    return sequences, fingers, stats


def length_stats(lengths: list[int]) -> str:
    return (
        f"n={len(lengths)}, min {min(lengths)}, median {statistics.median(lengths):g}, "
        f"mean {statistics.mean(lengths):.1f}, max {max(lengths)}"
    )


# ------------------------------------------------------------------------------------------
# demo: C2H2 zinc fingers vs Swiss-Prot negatives
# ------------------------------------------------------------------------------------------


def make_demo(src: Path, out: Path, rng: random.Random) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    sequences, fingers, stats = c2h2_fingers(src / "esm-dbp" / "zf_data_df.csv")
    short = sorted(a for a in sequences if len(sequences[a]) <= MAX_POSITIVE_LENGTH)
    assert len(short) >= N_POSITIVES, "not enough short zinc-finger proteins"
    chosen = sorted(rng.sample(short, N_POSITIVES))

    added: list[tuple[str, int, int]] = []
    with (out / "zinc_fingers.jsonl").open("w") as fh:
        for acc in chosen:
            seq = sequences[acc]
            spans = [(s, e, "zf_data_df.csv") for s, e in fingers[acc]]
            # The CSV skips some finger indices (rows dropped upstream), leaving canonical fingers
            # unlabelled inside positives. Add PS00028 matches that overlap no CSV finger.
            for m in re.finditer(f"(?=({PS00028.pattern}))", seq):
                start, end = m.start() + 1, m.start() + len(m.group(1))
                if all(end < s or start > e for s, e, _ in spans):
                    spans.append((start, end, "PS00028"))
                    added.append((acc, start, end))
            spans.sort()
            anns = []
            for (start, end, source), nxt in zip(spans, spans[1:] + [None], strict=True):
                assert C2H2_WHOLE.fullmatch(seq[start - 1 : end]), (acc, start, end)
                assert nxt is None or nxt[0] > end, (acc, start, end, nxt)
                anns.append(
                    {
                        "motif_id": "C2H2",
                        "start": start,
                        "end": end,
                        "name": "C2H2_zinc_finger",
                        "source": source,
                    }
                )
            fh.write(
                json.dumps({"accession": acc, "sequence": seq, "ground_truth_annotations": anns})
                + "\n"
            )

    negatives_all = read_simple_fasta(src / "esm-dbp" / "UniSwiss-Tr-nega.fasta")
    ps_hits = sorted(a for a, s in negatives_all.items() if PS00028.search(s))
    pool = {a: s for a, s in negatives_all.items() if a not in ps_hits and a not in sequences}
    used: set[str] = set()
    pairs = []
    for acc in chosen:  # each positive takes the unused negative of closest length
        target = len(sequences[acc])
        best = min(
            (a for a in pool if a not in used),
            key=lambda a: (abs(len(pool[a]) - target), len(pool[a]), a),
        )
        used.add(best)
        pairs.append((acc, best))
    with (out / "negatives.fasta").open("w") as fh:
        for pos, neg in pairs:
            fh.write(f">{neg} length-matched to {pos}\n{pool[neg]}\n")

    pos_len = [len(sequences[a]) for a in chosen]
    neg_len = [len(pool[n]) for _, n in pairs]
    n_fingers = [len(fingers[a]) + sum(1 for x in added if x[0] == a) for a in chosen]
    finger_len = [e - s + 1 for a in chosen for s, e in fingers[a]]
    finger_len += [e - s + 1 for _, s, e in added]
    skipped = {
        a: sorted(set(range(1, max(stats["indices"][a]) + 1)) - stats["indices"][a]) for a in chosen
    }
    diffs = [abs(len(sequences[p]) - len(pool[n])) for p, n in pairs]
    nonstd = sorted(n for _, n in pairs if set(pool[n]) - set("ACDEFGHIKLMNPQRSTVWY"))
    summary = {
        "positives": length_stats(pos_len),
        "negatives": length_stats(neg_len),
        "fingers_per_protein": length_stats(n_fingers),
        "finger_lengths": length_stats(finger_len),
        "total_fingers": sum(n_fingers),
        "csv_fingers": sum(len(fingers[a]) for a in chosen),
        "added_ps00028": added,
        "proteins_with_skipped_indices": sum(1 for v in skipped.values() if v),
        "skipped_indices": sum(len(v) for v in skipped.values()),
        "max_length_difference": max(diffs),
        "mean_length_difference": statistics.mean(diffs),
        "ps00028_dropped": ps_hits,
        "negatives_with_nonstandard_residues": nonstd,
        "csv": {k: v for k, v in stats.items() if k != "indices"},
    }
    shutil.copyfile(src / "esm-dbp" / "LICENSE.MIT", out / "LICENSE.esm-dbp.MIT")
    (out / "PROVENANCE.md").write_text(demo_provenance(summary))
    return summary


def demo_provenance(s: dict) -> str:
    offsets = ", ".join(f"{k} residues: {v}" for k, v in sorted(s["csv"]["offsets"].items()))
    return f"""# Demo data: C2H2 zinc fingers (concept) vs. Swiss-Prot negatives

Regenerate (seed {SEED}): `python scripts/make_demo_data.py --source <workspace>/shared/data`

## Source
{ESM_DBP}. Paper: Zeng et al., "Improving prediction performance of general protein language
model by domain-adaptive pretraining on DNA-binding protein". License: MIT, copied as
`LICENSE.esm-dbp.MIT`.

{UNIPROT_CREDIT}

## `zinc_fingers.jsonl` — {N_POSITIVES} positives with finger spans
- From `zf_data_df.csv` ({s["csv"]["rows"]} per-finger rows, 157 human C2H2 proteins, the full
  sequence on every row). {N_POSITIVES} proteins drawn with `random.Random({SEED}).sample` among
  the proteins of length <= {MAX_POSITIVE_LENGTH} (to keep the demo fast on a small CPU),
  written sorted by accession. Lengths: {s["positives"]}.
- One span per finger: the whole C2H2 finger (the `regular_expression` column, always matching
  `C.{{2,4}}C.{{12}}H.{{3,5}}H`), located in the sequence just before the 12-residue DNA-contact
  window `zf_indx_start` (0-based). Distance finger start -> window: {offsets}. Spans are
  1-based inclusive; every span's substring is checked against the regex.
- {s["csv"]["duplicate_register_rows"]} fingers are listed twice in the CSV (same window, two
  registers of the first cysteine, e.g. `CICPLC...` read as C-x4-C and as C-x2-C); one span is
  kept, the register 4 residues before the window.
- The CSV skips some finger indices (`zf_index` gaps: {s["skipped_indices"]} missing rows in
  {s["proteins_with_skipped_indices"]} of the chosen proteins), which leaves real fingers
  unlabelled inside positives. {len(s["added_ps00028"])} matches of PROSITE PS00028 (as the regex
  below) overlap no CSV finger: they are added as spans with `"source": "PS00028"`
  ({len({a for a, _, _ in s["added_ps00028"]})} proteins); the {s["csv_fingers"]} CSV spans
  carry `"source": "zf_data_df.csv"`. Fingers skipped by the CSV that do not match PS00028
  stay unlabelled.
- {s["total_fingers"]} fingers in all; per protein: {s["fingers_per_protein"]}; finger lengths:
  {s["finger_lengths"]}.
- Record format: `{{"accession", "sequence", "ground_truth_annotations": [{{"motif_id": "C2H2",
  "start", "end", "name": "C2H2_zinc_finger", "source"}}]}}`; spans never overlap.

## `negatives.fasta` — {N_POSITIVES} length-matched negatives
- From `UniSwiss-Tr-nega.fasta` (4,500 Swiss-Prot non-DNA-binding proteins). Sequences matching
  PROSITE PS00028 as the regex `C.{{2,4}}C.{{3}}[LIVMFYWC].{{8}}H.{{3,5}}H` were dropped
  ({len(s["ps00028_dropped"])}: {", ".join(s["ps00028_dropped"])}).
- For each positive in accession order, the unused negative of closest length (ties: shorter,
  then accession). Lengths: {s["negatives"]}; |length difference| max
  {s["max_length_difference"]}, mean {s["mean_length_difference"]:.2f}.
- Header: `>ACCESSION length-matched to POSITIVE`. Negatives holding non-standard residues
  (X/U, kept as ESM-2 tokens): {", ".join(s["negatives_with_nonstandard_residues"]) or "none"}.
"""


# ------------------------------------------------------------------------------------------
# concept library slices
# ------------------------------------------------------------------------------------------


def tmbed_records(path: Path) -> list[tuple[str, str, str]]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    assert len(lines) % 3 == 0
    return [(lines[i], lines[i + 1], lines[i + 2]) for i in range(0, len(lines), 3)]


def tmbed_class(labels: str) -> str:
    if re.search("[Hh]", labels):
        return "tm_helix"
    if re.search("[Bb]", labels):
        return "tm_beta"
    if "S" in labels:
        return "signal_peptide"
    return "globular"


def make_library(src: Path, out: Path, rng: random.Random) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {}

    # TMbed: stratified, seeded train/test split.
    records = tmbed_records(src / "tmbed" / "cv_00_a.fasta")
    by_class: dict[str, list[tuple[str, str, str]]] = defaultdict(list)
    for rec in records:
        if len(rec[1]) <= MAX_TMBED_LENGTH:
            by_class[tmbed_class(rec[2])].append(rec)
    train, test = [], []
    counts = {}
    for cls, n in TMBED_PLAN.items():
        pool = by_class[cls]
        assert len(pool) >= n, (cls, len(pool))
        picked = rng.sample(pool, n)
        n_test = n // 3
        test += picked[:n_test]
        train += picked[n_test:]
        counts[cls] = (n - n_test, n_test, len(pool))
    for name, recs in (("tmbed_train.txt", train), ("tmbed_test.txt", test)):
        order = {r[0]: i for i, r in enumerate(records)}
        recs.sort(key=lambda r: order[r[0]])  # keep source order
        (out / name).write_text("".join(f"{h}\n{s}\n{lab}\n" for h, s, lab in recs))
    summary["tmbed"] = {
        "counts": counts,
        "train": length_stats([len(r[1]) for r in train]),
        "test": length_stats([len(r[1]) for r in test]),
        "available": {c: len(v) for c, v in by_class.items()},
    }

    # PDNA-543 (train slice) and PDNA-41 (all).
    seqs = read_simple_fasta(src / "esm-dbp" / "PDNA-543_sequence.fasta")
    labels = read_label_fasta(src / "esm-dbp" / "PDNA-543_label.fasta")
    assert list(seqs) == list(labels)
    short = [a for a in seqs if len(seqs[a]) <= MAX_PDNA_LENGTH]
    picked = set(rng.sample(short, N_PDNA_TRAIN))
    ids = [a for a in seqs if a in picked]  # source order
    (out / "pdna_train_sequence.fasta").write_text("".join(f">{a}\n{seqs[a]}\n" for a in ids))
    (out / "pdna_train_label.fasta").write_text("".join(f">{a}\n{labels[a]}\n" for a in ids))
    for kind in ("sequence", "label"):
        shutil.copyfile(src / "esm-dbp" / f"PDNA-41_{kind}.fasta", out / f"pdna_test_{kind}.fasta")
    test_seqs = read_simple_fasta(src / "esm-dbp" / "PDNA-41_sequence.fasta")
    n_sites = [len(labels[a].split()) for a in ids]
    summary["pdna"] = {
        "train": length_stats([len(seqs[a]) for a in ids]),
        "train_sites": length_stats(n_sites),
        "test": length_stats([len(s) for s in test_seqs.values()]),
        "available_short": len(short),
    }

    # Pfam seed: byte-for-byte copy.
    shutil.copyfile(
        src / "kzfp_annotation" / "zf-C2H2_PF00096_seed.sto", out / "zf_c2h2_pfam_seed.sto"
    )

    # UniProt entries: byte-for-byte entries, duplicates (same first accession) dropped.
    text = (src / "uniprot-core" / "entryIT_swissprot_trembl.dat").read_text()
    entries = [e + "//\n" for e in text.split("//\n") if e.strip()]
    kept, dropped, seen = [], [], set()
    for entry in entries:
        acc = re.search(r"^AC   (\S+?);", entry, re.M).group(1)
        if acc in seen:
            dropped.append(acc)
            continue
        seen.add(acc)
        kept.append(entry)
    (out / "uniprot_entries.dat").write_text("".join(kept))
    summary["uniprot"] = {"entries": len(entries), "kept": len(kept), "dropped": dropped}

    lic = out
    shutil.copyfile(src / "esm-dbp" / "LICENSE.MIT", lic / "LICENSE.esm-dbp.MIT")
    shutil.copyfile(src / "tmbed" / "LICENSE.Apache-2.0", lic / "LICENSE.tmbed.Apache-2.0")
    shutil.copyfile(src / "kzfp_annotation" / "LICENSE.MIT", lic / "LICENSE.kzfp_annotation.MIT")
    shutil.copyfile(
        src / "uniprot-core" / "LICENSE.Apache-2.0", lic / "LICENSE.uniprot-core.Apache-2.0"
    )
    (out / "PROVENANCE.md").write_text(library_provenance(summary))
    return summary


def library_provenance(s: dict) -> str:
    t = s["tmbed"]
    rows = "\n".join(f"| {c} | {a} | {b} | {n} |" for c, (a, b, n) in t["counts"].items())
    u = s["uniprot"]
    return f"""# Concept-library data slices

Regenerate (seed {SEED}): `python scripts/make_demo_data.py --source <workspace>/shared/data`

{UNIPROT_CREDIT} PDNA chains are PDB entries (PDB data: CC0).

## `tmbed_train.txt`, `tmbed_test.txt` — TM helix, TM beta strand, signal peptide
From {TMBED}, `data/cv/cv_00_a.fasta` (1,307 records). License: `LICENSE.tmbed.Apache-2.0`.
Paper: Bernhofer & Rost, "TMbed: transmembrane proteins predicted through language model
embeddings", BMC Bioinformatics 2022. Three lines a record, copied unchanged: `>header`,
sequence, labels (H/h TM helix, B/b TM beta strand, S signal peptide, 1 inside, 2 outside,
U unknown). Records of length <= {MAX_TMBED_LENGTH} only; per class (a record with any H/h is
`tm_helix`, else any B/b `tm_beta`, else any S `signal_peptide`, else `globular`), a seeded
sample, one third to test; records kept in source order.

| class | train | test | available (length <= {MAX_TMBED_LENGTH}) |
|---|---|---|---|
{rows}

Lengths: train {t["train"]}; test {t["test"]}.
Read with `esm_tcav.io.readers.read_tmbed` (spans `transmembrane_helix`, `transmembrane_beta`,
`signal_peptide`).

## `pdna_train_*.fasta`, `pdna_test_*.fasta` — DNA-binding residues
From {ESM_DBP}: `PDNA-543_sequence.fasta` / `PDNA-543_label.fasta` ->
`pdna_train_*` ({N_PDNA_TRAIN} of the {s["pdna"]["available_short"]} chains of length <=
{MAX_PDNA_LENGTH}, seeded sample, source order; lengths {s["pdna"]["train"]}; binding residues
per chain {s["pdna"]["train_sites"]}); `PDNA-41_*` copied whole -> `pdna_test_*` (lengths
{s["pdna"]["test"]}). The label file lists 1-based binding-residue indices per chain. License:
`LICENSE.esm-dbp.MIT`. Read with `esm_tcav.io.readers.read_pdna` (spans `dna_binding`).

## `zf_c2h2_pfam_seed.sto` — Pfam zf-C2H2 (PF00096) seed alignment
From {KZFP}, `PFAM/zf-C2H2/zf-C2H2_seed.sto`, copied unchanged. Stockholm, 159 sequences,
alignment length 31, no `#=GF` header (no Pfam gathering cut-offs). Pfam data are CC0; the
repository is MIT (`LICENSE.kzfp_annotation.MIT`).

## `uniprot_entries.dat` — {u["kept"]} UniProt flat-file entries
From {UNIPROT_CORE}: the `.dat`/`.txl` files of `ff-parser/src/test/resources/entryIT/`,
concatenated ({u["entries"]} entries). Each entry is copied unchanged; {len(u["dropped"])} entries
whose first accession repeats an earlier one (the same protein twice, e.g. from its `.dat`
and `.txl` files: {", ".join(u["dropped"])}) are dropped so that accessions are unique; the
first copy is kept.
License: `LICENSE.uniprot-core.Apache-2.0`. Feature tables with DOMAIN, TRANSMEM, SIGNAL,
ZN_FING, ...; read with `esm_tcav.io.readers.read_uniprot_dat`.
"""


# ------------------------------------------------------------------------------------------
# tiny test fixtures
# ------------------------------------------------------------------------------------------


def make_fixtures(src: Path, data: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    zf = (data / "demo" / "zinc_fingers.jsonl").read_text().splitlines()
    (out / "zinc_fingers_3.jsonl").write_text("\n".join(zf[:3]) + "\n")
    neg = (data / "demo" / "negatives.fasta").read_text().splitlines()
    (out / "negatives_3.fasta").write_text("\n".join(neg[:6]) + "\n")

    records = tmbed_records(src / "tmbed" / "cv_00_a.fasta")
    picked = {}
    for rec in records:  # the shortest record of each class
        cls = tmbed_class(rec[2])
        if cls not in picked or len(rec[1]) < len(picked[cls][1]):
            picked[cls] = rec
    order = ["tm_helix", "signal_peptide", "tm_beta", "globular"]
    (out / "tmbed_4.txt").write_text(
        "".join(f"{h}\n{s}\n{lab}\n" for h, s, lab in (picked[c] for c in order))
    )

    seqs = read_simple_fasta(src / "esm-dbp" / "PDNA-41_sequence.fasta")
    labels = read_label_fasta(src / "esm-dbp" / "PDNA-41_label.fasta")
    ids = sorted(seqs, key=lambda a: len(seqs[a]))[:3]
    (out / "pdna_3_sequence.fasta").write_text("".join(f">{a}\n{seqs[a]}\n" for a in ids))
    (out / "pdna_3_label.fasta").write_text("".join(f">{a}\n{labels[a]}\n" for a in ids))

    text = (src / "uniprot-core" / "entryIT_swissprot_trembl.dat").read_text()
    entries = {}
    for entry in (e + "//\n" for e in text.split("//\n") if e.strip()):
        entries.setdefault(re.search(r"^AC   (\S+?);", entry, re.M).group(1), entry)
    want = ["A0A0E2CV74", "A0A1Q9NR16", "P14592", "Q80WC7"]
    (out / "uniprot_4.dat").write_text("".join(entries[a] for a in want))

    (out / "README.md").write_text(
        "# Test fixtures\n\n"
        "Cut from the real public files by `scripts/make_demo_data.py` (see "
        "`data/demo/PROVENANCE.md` and `data/library/PROVENANCE.md` for sources and licenses; "
        "UniProtKB data CC BY 4.0, credit UniProt):\n\n"
        "- `zinc_fingers_3.jsonl`, `negatives_3.fasta`: the first 3 records of "
        "`data/demo/zinc_fingers.jsonl` and `data/demo/negatives.fasta` (ESM-DBP, MIT).\n"
        "- `tmbed_4.txt`: the shortest TM-helix, signal-peptide, TM-beta and globular record "
        "of TMbed `data/cv/cv_00_a.fasta` (Apache-2.0).\n"
        "- `pdna_3_sequence.fasta`, `pdna_3_label.fasta`: the 3 shortest chains of ESM-DBP "
        "PDNA-41 (MIT).\n"
        f"- `uniprot_4.dat`: entries {', '.join(want)} of uniprot-core `entryIT/` (Apache-2.0).\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=ROOT.parent / "shared" / "data",
        help="folder with esm-dbp/, tmbed/, kzfp_annotation/, uniprot-core/",
    )
    parser.add_argument("--out", type=Path, default=ROOT / "data")
    parser.add_argument("--fixtures", type=Path, default=ROOT / "tests" / "data")
    args = parser.parse_args()
    rng = random.Random(SEED)
    demo = make_demo(args.source, args.out / "demo", rng)
    library = make_library(args.source, args.out / "library", random.Random(SEED + 1))
    make_fixtures(args.source, args.out, args.fixtures)

    total = sum(
        p.stat().st_size
        for d in ("demo", "library")
        for p in (args.out / d).rglob("*")
        if p.is_file()
    )
    assert total < DATA_BUDGET_BYTES, f"data/ slices are {total} bytes, over budget"
    print(json.dumps({"demo": demo, "library": library, "bytes": total}, indent=1, default=str))


if __name__ == "__main__":
    main()
