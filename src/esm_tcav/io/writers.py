"""Result and data files: GFF3, span and protein tables, FASTA and JSONL of proteins.

One writer per format, so `detect` and `scan` (and the library build) write the same bytes for
the same spans, and one escaping rule per format: GFF3 percent-encodes (its spec), TSV cells turn
tabs and newlines into spaces (a hostile ID must not add a column or a row). Coordinates are
1-based inclusive everywhere. Every file goes through `io.files` (atomic, fsynced).
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
    "gff3_records",
    "gff3_lines",
    "tsv_field",
    "tsv_line",
    "span_tsv_lines",
    "write_gff3",
    "write_spans_tsv",
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


def gff3_records(
    rows: SpanRows,
    concept: str,
    layer: int,
    threshold: float,
    method: str,
    mode: str,
) -> Iterator[str]:
    """GFF3 feature lines (no header) for (protein id, span) rows; IDs count per protein."""
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


def gff3_lines(
    rows: SpanRows, concept: str, layer: int, threshold: float, method: str, mode: str
) -> Iterator[str]:
    """A whole GFF3 file: the version line, then ``gff3_records``."""
    yield GFF3_HEADER
    yield from gff3_records(rows, concept, layer, threshold, method, mode)


def write_gff3(
    path: Path,
    rows: SpanRows,
    concept: str,
    layer: int,
    threshold: float,
    method: str,
    mode: str,
) -> None:
    atomic_write_lines(path, gff3_lines(rows, concept, layer, threshold, method, mode))


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
    rows: SpanRows, concept: str, layer: int, threshold: float, method: str
) -> Iterator[str]:
    """Rows (no header) of the spans table, the columns of ``SPAN_COLUMNS``."""
    for pid, s in rows:
        yield tsv_line(
            [pid, s.start, s.end, s.length, s.score, concept, layer, f"{threshold:.6g}", method]
        )


def write_spans_tsv(
    path: Path, rows: SpanRows, concept: str, layer: int, threshold: float, method: str
) -> None:
    atomic_write_lines(
        path, chain([SPANS_TSV_HEADER], span_tsv_lines(rows, concept, layer, threshold, method))
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
