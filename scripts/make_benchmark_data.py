#!/usr/bin/env python
"""Build the versioned data slices of the multi-concept benchmark (data/benchmark/).

Reproducible: fixed seed, sorted inputs, no network; every line is copied unchanged from the
public source files of the development workspace (default ``/work/shared/data``)::

    python scripts/make_benchmark_data.py --source /work/shared/data

Writes data/benchmark/: an InterProScan 6 slice (Pfam and Phobius rows + the sequences), the
bindPredict development set (binding residues of three ligand classes, their split), a FLIP
secondary-structure slice, the licences, PROVENANCE.md and MANIFEST.json (set version + sha256 of
every file the benchmark reads, including the TMbed and C2H2 slices already in data/).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import zipfile
from pathlib import Path

from esm_tcav.io.files import atomic_write_text, sha256_file

SEED = 20261201
SET_VERSION = "bench-1"
ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "data" / "benchmark"
IPS_ANALYSES = ("Pfam", "Phobius")
FLIP_MAX_LENGTH = 500
FLIP_TRAIN, FLIP_TEST = 150, 60  # seeded samples (plus every chain without helix, see below)
BUDGET_BYTES = 3_000_000

#: Files outside data/benchmark/ that the benchmark set reads (already versioned in data/).
REUSED = [
    "data/demo/zinc_fingers.jsonl",
    "data/demo/negatives.fasta",
    "data/library/tmbed_train.txt",
    "data/library/tmbed_test.txt",
]


def _fasta(text: str) -> list[tuple[str, str]]:
    """(header line, body lines) of each record, unchanged."""
    out: list[tuple[str, str]] = []
    for line in text.splitlines(keepends=True):
        if line.startswith(">"):
            out.append((line, ""))
        elif out:
            out[-1] = (out[-1][0], out[-1][1] + line)
    return out


def make_interproscan(src: Path) -> dict:
    rows = (src / "interproscan6" / "test.faa.tsv").read_text().splitlines(keepends=True)
    # the `|extended` records repeat an accession (an InterProScan test of longer variants):
    # dropped, with their rows, so that every accession names one sequence
    kept = [
        r
        for r in rows
        if r.split("\t")[3] in IPS_ANALYSES and not r.split("\t")[0].endswith("|extended")
    ]
    atomic_write_text(OUT / "interproscan.tsv", "".join(kept))
    records = _fasta((src / "interproscan6" / "test.faa").read_text())
    fasta = [(h, b) for h, b in records if not h.split()[0].endswith("|extended")]
    atomic_write_text(OUT / "interproscan.faa", "".join(h + b for h, b in fasta))
    shutil.copyfile(
        src / "interproscan6" / "LICENSE.Apache-2.0", OUT / "LICENSE.interproscan6.Apache-2.0"
    )
    dropped = len(records) - len(fasta)
    return {"rows": len(rows), "kept": len(kept), "proteins": len(fasta), "dropped": dropped}


def make_bindpredict(src: Path) -> dict:
    b = src / "bindpredict"
    shutil.copyfile(b / "all.fasta", OUT / "bindpredict.fasta")
    ids = {h[1:].split()[0] for h, _ in _fasta((b / "all.fasta").read_text())}
    counts = {}
    for kind in ("metal", "nuclear", "small"):
        lines = (b / f"binding_residues_2.5_{kind}.txt").read_text().splitlines(keepends=True)
        kept = [x for x in lines if x.split("\t")[0].strip() in ids]
        atomic_write_text(OUT / f"bindpredict_{kind}.txt", "".join(kept))
        counts[kind] = len(kept)
    test = (b / "uniprot_test.txt").read_text()
    atomic_write_text(OUT / "bindpredict_test_ids.txt", test)
    shutil.copyfile(b / "LICENSE.MIT", OUT / "LICENSE.bindpredict.MIT")
    return {"proteins": len(ids), **counts, "test": len(test.split())}


def make_flip(src: Path, rng: random.Random) -> dict:
    z = zipfile.ZipFile(src / "flip" / "secondary_structure_splits.zip")
    kinds = ("sequences", "sampled", "mask")
    files = {k: _fasta(z.read(f"splits/{k}.fasta").decode()) for k in kinds}
    n = len(files["sequences"])
    chosen: list[int] = []
    counts = {}
    for part, size in (("train", FLIP_TRAIN), ("test", FLIP_TEST)):
        pool = []
        for i in range(n):
            head = files["sampled"][i][0].split()
            seq = "".join(files["sequences"][i][1].split())
            if f"SET={part}" in head and "VALIDATION=False" in head and len(seq) <= FLIP_MAX_LENGTH:
                pool.append(i)
        labels = {i: "".join(files["sampled"][i][1].split()) for i in pool}
        no_helix = [i for i in pool if "H" not in labels[i]]
        rest = [i for i in pool if "H" in labels[i]]
        pick = sorted(no_helix + rng.sample(rest, size))
        chosen += pick
        counts[part] = {"chains": len(pick), "without_helix": len(no_helix), "pool": len(pool)}
    chosen.sort()
    for k, recs in files.items():
        atomic_write_text(OUT / f"flip_{k}.fasta", "".join(recs[i][0] + recs[i][1] for i in chosen))
    shutil.copyfile(src / "flip" / "LICENSE.AFL-3.0", OUT / "LICENSE.flip.AFL-3.0")
    return counts


PROVENANCE = """# Multi-concept benchmark data (set {version})

Regenerate (seed {seed}): `python scripts/make_benchmark_data.py --source <workspace>/shared/data`.
Every line is copied unchanged from the source file named; `MANIFEST.json` holds the set version
and the sha256 of every file the benchmark reads (this folder plus the C2H2 and TMbed slices in
`data/demo/` and `data/library/`, described in their PROVENANCE.md). The benchmark refuses a set
whose files do not match the manifest.

Sequences are UniProtKB records, (c) the UniProt Consortium, CC BY 4.0
(https://creativecommons.org/licenses/by/4.0/): credit UniProt (The UniProt Consortium, Nucleic
Acids Res. 2023, 51:D523-D531). PDB-derived labels (FLIP, bindPredict): PDB data are CC0.

## `interproscan.tsv`, `interproscan.faa` — Pfam families and Phobius segments (spans)
From github.com/ebi-pf-team/interproscan6 (Apache-2.0, `LICENSE.interproscan6.Apache-2.0`):
`tests/data/test.faa` at commit e0904ee0 ({ips[proteins]} UniProtKB/TrEMBL sequences: all but
the {ips[dropped]} `|extended` records, which repeat an accession with a longer sequence) and the
rows (not of the `|extended` records) of `tests/data/output/test.faa.tsv` (commit 8703fb9d) whose
analysis is {analyses}: {ips[kept]} of {ips[rows]} rows. InterProScan TSV, coordinates
1-based inclusive. These spans are HMM predictions, not curation.

## `bindpredict*.{{fasta,txt}}` — metal, nucleic-acid and small-molecule binding residues
From github.com/Rostlab/bindPredict (MIT, `LICENSE.bindpredict.MIT`), commit aa7acfff,
`data/development_set/`: `all.fasta` copied whole ({bp[proteins]} sequences); the lines of
`binding_residues_2.5_{{metal,nuclear,small}}.txt` whose protein is in `all.fasta` (metal
{bp[metal]}, nuclear {bp[nuclear]}, small {bp[small]} proteins; `ACC<TAB>1-based positions`);
`uniprot_test.txt` (their TestSet300, {bp[test]} IDs) as `bindpredict_test_ids.txt`: the
benchmark's test proteins (their own split), every other protein trains. Paper: Littmann et al.,
Sci. Rep. 2021. Labels from BioLiP can be incomplete.

## `flip_{{sequences,sampled,mask}}.fasta` — helix and strand per residue
From github.com/J-SNACKKB/FLIP (Academic Free License 3.0, `LICENSE.flip.AFL-3.0`), commit
62cace87, `splits/secondary_structure/splits.zip` (NetSurfP-2.0 chains): the same records of the
three files, in source order. Chains of length <= {flip_max} with `VALIDATION=False`; per
`SET=train`/`SET=test` (their split) every chain without any helix (train
{flip[train][without_helix]}, test {flip[test][without_helix]}: negatives of the helix concept)
plus a seeded sample of {flip_train} / {flip_test} chains with helix (pools {flip[train][pool]} /
{flip[test][pool]}).
Labels: 3-state H/E/C; residues with mask 0 (unresolved) are read as outside every span.
"""


def write_manifest() -> dict:
    files = sorted(p for p in OUT.iterdir() if p.is_file() and p.name != "MANIFEST.json")
    rel = [str(p.relative_to(ROOT)) for p in files] + REUSED
    manifest = {
        "set_version": SET_VERSION,
        "seed": SEED,
        "files": {r: sha256_file(ROOT / r) for r in sorted(rel)},
    }
    atomic_write_text(OUT / "MANIFEST.json", json.dumps(manifest, indent=1) + "\n")
    return manifest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--source", type=Path, default=Path("/work/shared/data"))
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    ips = make_interproscan(args.source)
    bp = make_bindpredict(args.source)
    flip = make_flip(args.source, rng)
    text = PROVENANCE.format(
        version=SET_VERSION,
        seed=SEED,
        analyses=" or ".join(IPS_ANALYSES),
        ips=ips,
        bp=bp,
        flip=flip,
        flip_max=FLIP_MAX_LENGTH,
        flip_train=FLIP_TRAIN,
        flip_test=FLIP_TEST,
    )
    atomic_write_text(OUT / "PROVENANCE.md", text)
    write_manifest()
    total = sum(p.stat().st_size for p in OUT.iterdir())
    if total > BUDGET_BYTES:
        raise SystemExit(f"data/benchmark is {total:,} bytes, over the {BUDGET_BYTES:,} budget")
    print(json.dumps({"interproscan": ips, "bindpredict": bp, "flip": flip, "bytes": total}))


if __name__ == "__main__":
    main()
