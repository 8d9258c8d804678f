"""The concept dataset of a run: positives with concept spans, negatives, a split by protein."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from esm_tcav.config import Config
from esm_tcav.errors import InputError
from esm_tcav.io.files import atomic_write_text
from esm_tcav.io.proteins import Protein
from esm_tcav.io.readers import attach_spans, read_proteins, read_span_file, select_spans
from esm_tcav.run.sampling import group_split, kmer_clusters, length_matched

log = logging.getLogger("esm_tcav.run.dataset")


@dataclass
class Dataset:
    concept: str
    positives: list[Protein]
    negatives: list[Protein]
    test_ids: set[str] = field(default_factory=set)

    @property
    def proteins(self) -> list[Protein]:
        return self.positives + self.negatives

    @property
    def has_spans(self) -> bool:
        return any(p.spans for p in self.positives)

    def part(self, which: str) -> tuple[list[Protein], list[Protein]]:
        """(positives, negatives) of the 'train' or 'test' part."""
        test = which == "test"
        return (
            [p for p in self.positives if (p.id in self.test_ids) == test],
            [p for p in self.negatives if (p.id in self.test_ids) == test],
        )

    def split_record(self) -> dict:
        train_pos, train_neg = self.part("train")
        test_pos, test_neg = self.part("test")

        def ids(ps: list[Protein]) -> list[str]:
            return [p.id for p in ps]

        return {
            "concept": self.concept,
            "train": {"positives": ids(train_pos), "negatives": ids(train_neg)},
            "test": {"positives": ids(test_pos), "negatives": ids(test_neg)},
        }


def split_by_protein(ids: list[str], fraction: float, seed: int) -> set[str]:
    """Seeded choice of held-out protein IDs (sorted first, so input order does not matter)."""
    ordered = sorted(ids)
    rng = np.random.default_rng(seed)
    n_test = max(1, round(len(ordered) * fraction)) if len(ordered) > 1 else 0
    return set(rng.permutation(ordered)[:n_test].tolist())


def split_labelled(
    proteins: list[Protein], names: list[str] | None, source: str, min_proteins: int = 1
) -> tuple[list[Protein], list[Protein]]:
    """(positives, negatives) of one labelled file: records with a concept span, and the others
    (without spans). For a run config without ``data.negatives`` (a TMbed file, UniProt .dat)."""
    marked = select_spans(proteins, names, source, min_proteins)
    positives = [p for p in marked if p.spans]
    negatives = [Protein(p.id, p.sequence) for p in marked if not p.spans]
    if not negatives:
        raise InputError(
            f"{source}: data.negatives is not given and every record carries the concept "
            f"({', '.join(names or ['any span'])}); give data.negatives or a file with "
            "unlabelled proteins"
        )
    log.info("%s: %d positives, %d negatives (no concept span)", source, len(positives),
             len(negatives))  # fmt: skip
    return positives, negatives


def load_dataset(cfg: Config) -> Dataset:
    d = cfg.data
    positives = read_proteins(cfg.path(d.positives), d.positives_format)
    if d.spans_file:
        spans_path = cfg.path(d.spans_file)
        positives = attach_spans(positives, read_span_file(spans_path), d.concept, spans_path)
    source = cfg.path(d.spans_file or d.positives)
    negatives: list[Protein] | None = None
    if d.negatives is None and d.background is None:
        positives, negatives = split_labelled(
            positives, d.span_names, str(source), d.min_span_proteins
        )
    else:  # negatives from a file, and/or drawn from the background population below
        if d.negatives is not None:
            negatives = read_proteins(cfg.path(d.negatives), d.negatives_format)
        positives = select_spans(positives, d.span_names, source, d.min_span_proteins)
    fixed_test: set[str] | None = None
    if d.test_positives or d.test_negatives:
        split_test = d.negatives is None and d.background is None and d.test_negatives is None
        if not d.test_positives or not (d.test_negatives or split_test):
            raise InputError("data.test_positives and data.test_negatives go together; give both")
        test_pos = select_spans(
            read_proteins(cfg.path(d.test_positives), d.positives_format),
            d.span_names,
            cfg.path(d.test_positives),
        )
        if split_test:
            test_pos, test_neg = split_labelled(test_pos, None, str(d.test_positives))
        else:
            test_neg = read_proteins(cfg.path(d.test_negatives), d.negatives_format)
        fixed_test = {p.id for p in test_pos + test_neg}
        known = {p.id for p in positives + (negatives or [])}
        if fixed_test & known:
            raise InputError(
                f"{cfg.path(d.test_positives)}: record {sorted(fixed_test & known)[0]!r} is in "
                "both the training and the test files; remove it from one"
            )
        positives = positives + test_pos
        negatives = test_neg if negatives is None else negatives + test_neg
    if d.background is not None:
        negatives = (negatives or []) + background_negatives(cfg, positives, fixed_test)
    both = {p.id for p in positives} & {p.id for p in negatives}
    if both:
        raise InputError(
            f"{cfg.path(d.negatives or d.positives)}: record {sorted(both)[0]!r} is also a "
            "positive in "
            f"{cfg.path(d.positives)} ({len(both)} shared IDs); remove it from one of the files"
        )
    if len(positives) < 4 or len(negatives) < 4:
        raise InputError(
            f"need at least 4 positives and 4 negatives to train and test a concept, got "
            f"{len(positives)} and {len(negatives)}; add proteins to the data files"
        )
    if any(p.spans for p in positives) and not all(p.spans for p in positives):
        missing = [p.id for p in positives if not p.spans]
        log.warning(
            "%d positives have no concept span (e.g. %s); they count as whole-protein "
            "positives only",
            len(missing),
            missing[0],
        )
    if fixed_test is not None:
        test_ids = fixed_test
    elif d.split == "cluster":
        test_ids = cluster_split(positives, negatives, d.test_fraction, cfg.seed)
    else:
        test_ids = split_by_protein(
            [p.id for p in positives], d.test_fraction, cfg.seed
        ) | split_by_protein([p.id for p in negatives], d.test_fraction, cfg.seed + 1)
    return Dataset(d.concept, positives, negatives, test_ids)


def background_negatives(
    cfg: Config, positives: list[Protein], fixed_test: set[str] | None
) -> list[Protein]:
    """Length-matched negatives from `data.background`, never a positive (by ID or sequence).

    With fixed test files the drawn negatives train only (the test negatives are given).
    """
    d = cfg.data
    pos = [p for p in positives if fixed_test is None or p.id not in fixed_test]
    ids = {p.id for p in positives}
    seqs = {p.seq_hash for p in positives}
    pool = [
        Protein(p.id, p.sequence)
        for p in read_proteins(cfg.path(d.background), d.negatives_format)
        if p.id not in ids and p.seq_hash not in seqs and p.id not in (fixed_test or set())
    ]
    n = max(4, round(len(pos) * d.negatives_per_positive))
    return length_matched(pool, pos, n, cfg.seed)


def cluster_split(
    positives: list[Protein], negatives: list[Protein], fraction: float, seed: int
) -> set[str]:
    """Held-out IDs by k-mer similarity cluster (run.sampling), per class."""
    both = positives + negatives
    group = dict(zip([p.id for p in both], kmer_clusters(both), strict=True))
    test = group_split([p.id for p in positives], [group[p.id] for p in positives], fraction, seed)
    return test | group_split(
        [p.id for p in negatives], [group[p.id] for p in negatives], fraction, seed + 1
    )


def write_split(ds: Dataset, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(ds.split_record(), indent=1))
