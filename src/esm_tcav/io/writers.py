"""Result and data files: GFF3, span and protein tables, FASTA and JSONL of proteins.

One writer per format, so `detect` and `scan` (and the library build) write the same bytes for
the same spans, and one escaping rule per format: GFF3 percent-encodes (its spec), TSV cells turn
tabs and newlines into spaces (a hostile ID must not add a column or a row). Coordinates are
1-based inclusive everywhere. Line generators stream into `io.files.atomic_write_lines` (atomic,
fsynced); a scan appends them chunk by chunk instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from esm_tcav.io.files import atomic_write_lines
from esm_tcav.io.proteins import Protein

__all__ = [
    "GFF3_HEADER",
    "SPAN_COLUMNS",
    "SPANS_TSV_HEADER",
    "gff_escape",
    "gff3_lines",
    "tsv_field",
    "tsv_line",
    "span_tsv_lines",
    "write_table",
    "write_fasta",
    "write_jsonl",
]


# (protein id, span) pairs; a span has start, end, length and score (localize.spans.ScoredSpan)
SpanRows = Iterable[tuple[str, Any]]


# ---------------------------------------------------------------------- GFF3

GFF3_HEADER = "##gff-version 3\n"


def gff_escape(text: str, attribute: bool = False) -> str:
    """Percent-encode what GFF3 reserves (tabs, newlines, ';', '=', '%', ...); attribute
    values may keep spaces."""
    safe = "._-:^*$@!+?|" if not attribute else "._-:^*$@!+?| "
    return quote(str(text), safe=safe)


def gff3_lines(
    rows: SpanRows,
    concept: str,
    layer: int,
    threshold: float,
    method: str,
    mode: str,
    header: bool = True,
    grade: str | None = None,
) -> Iterator[str]:
    """GFF3 lines for (protein id, span) rows, the version line first unless ``header=False``.

    Feature IDs count per protein: ``<protein>_<concept>_<n>``. ``grade`` (the concept's grade:
    strong / usable / weak / not a concept) becomes a ``grade=`` attribute of every feature.
    """
    if header:
        yield GFF3_HEADER
    ftype = gff_escape(concept)
    counter: dict[str, int] = {}
    for pid, span in rows:
        counter[pid] = counter.get(pid, 0) + 1
        attrs = ";".join(
            [
                f"ID={gff_escape(f'{pid}_{concept}_{counter[pid]}', True)}",
                f"Name={gff_escape(concept, True)}",
                f"layer={layer}",
                f"threshold={threshold:.6g}",
                f"method={method}",
                f"mode={mode}",
                *([f"grade={gff_escape(grade, True)}"] if grade else []),
            ]
        )
        yield (
            "\t".join(
                [
                    gff_escape(pid),
                    "esm-tcav",
                    ftype,
                    str(span.start),
                    str(span.end),
                    f"{span.score:.4f}",
                    ".",
                    ".",
                    attrs,
                ]
            )
            + "\n"
        )


# ---------------------------------------------------------------------- TSV

SPAN_COLUMNS = (
    "protein_id",
    "start",
    "end",
    "length",
    "score",
    "concept",
    "layer",
    "threshold",
    "method",
    "grade",
)


def tsv_field(value: object) -> str:
    """One cell: floats with 4 decimals, None empty, tabs and newlines in text made spaces."""
    if value is None:
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{value:.4f}"
    return str(value).replace("\t", " ").replace("\n", " ")


def tsv_line(cells: Iterable[object]) -> str:
    """One row, cells escaped by ``tsv_field``, newline-terminated."""
    return "\t".join(tsv_field(c) for c in cells) + "\n"


SPANS_TSV_HEADER = tsv_line(SPAN_COLUMNS)


def span_tsv_lines(
    rows: SpanRows,
    concept: str,
    layer: int,
    threshold: float,
    method: str,
    header: bool = True,
    grade: str | None = None,
) -> Iterator[str]:
    """The spans table (columns ``SPAN_COLUMNS``), the header line first unless ``header=False``;
    the grade column is empty for an ungraded concept."""
    if header:
        yield SPANS_TSV_HEADER
    for pid, s in rows:
        yield tsv_line(
            [
                pid,
                s.start,
                s.end,
                s.length,
                s.score,
                concept,
                layer,
                f"{threshold:.6g}",
                method,
                grade,
            ]
        )


def write_table(path: Path, columns: Sequence[str], rows: Iterable[Iterable[object]]) -> None:
    """A TSV with a header line (e.g. one row per protein), cells escaped by ``tsv_field``."""
    atomic_write_lines(path, chain([tsv_line(columns)], (tsv_line(r) for r in rows)))


# ---------------------------------------------------------------------- sequence files


def write_fasta(path: Path, proteins: Iterable[Protein]) -> None:
    """One header line and one sequence line per protein (what ``read_fasta`` reads back)."""
    atomic_write_lines(path, (f">{p.id}\n{p.sequence}\n" for p in proteins))


def write_jsonl(
    path: Path, proteins: Iterable[Protein], names: Iterable[str] | None = None
) -> None:
    """``{accession, sequence, ground_truth_annotations}`` per line (what ``read_jsonl`` reads).

    Annotations are the spans named in ``names`` (all if None), 1-based inclusive, with the
    span name as both ``motif_id`` and ``name``.
    """
    keep = None if names is None else set(names)

    def line(p: Protein) -> str:
        anns = [
            {"motif_id": s.name, "start": s.start, "end": s.end, "name": s.name}
            for s in p.spans
            if keep is None or s.name in keep
        ]
        record = {"accession": p.id, "sequence": p.sequence, "ground_truth_annotations": anns}
        return json.dumps(record) + "\n"

    atomic_write_lines(path, (line(p) for p in proteins))
