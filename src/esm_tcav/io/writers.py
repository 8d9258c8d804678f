"""Result and data files: GFF3, span and protein tables, FASTA and JSONL of proteins.

One writer per format, so `detect` and `scan` (and the library build) write the same bytes for
the same spans, and one escaping rule per format: GFF3 percent-encodes (its spec), TSV cells turn
tabs and newlines into spaces (a hostile ID must not add a column or a row). Coordinates are
1-based inclusive everywhere. Line generators stream into `io.files.atomic_write_lines` (atomic,
fsynced); a scan appends them chunk by chunk instead.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
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
    "INTERPROSCAN_COLUMNS",
    "interproscan_tsv_lines",
    "GFF3_SO_TYPE",
    "sequence_region",
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


#: Sequence Ontology type of every detected span: "polypeptide_region" (SO:0000839), a region
#: of a polypeptide with no more specific claim; the concept itself is the feature's Name.
GFF3_SO_TYPE = "polypeptide_region"


def sequence_region(pid: str, length: int) -> str:
    """The ``##sequence-region`` pragma GFF3 validators expect before a protein's features."""
    return f"##sequence-region {gff_escape(pid)} 1 {int(length)}\n"


def gff3_lines(
    rows: SpanRows,
    concept: str,
    layer: int,
    threshold: float,
    method: str,
    mode: str,
    header: bool = True,
    lengths: Mapping[str, int] | None = None,
    grade: str | None = None,
    probability: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Iterator[str]:
    """GFF3 lines for (protein id, span) rows, the version line first unless ``header=False``.

    Column 3 is the Sequence Ontology type ``GFF3_SO_TYPE`` and ``Name=`` the concept, so the
    file passes ``gt gff3validator -typecheck so``. With ``lengths`` (protein id -> residues),
    a ``##sequence-region`` pragma precedes each protein's first feature. The score column is
    ``probability(mean span score)`` (the concept's calibration, so scores compare across
    concepts) when given, else the mean span score.
    Feature IDs count per protein: ``<protein>_<concept>_<n>``. ``grade`` (the concept's grade:
    strong / usable / weak / not a concept) becomes a ``grade=`` attribute of every feature.
    """
    if header:
        yield GFF3_HEADER
    counter: dict[str, int] = {}
    for pid, span in rows:
        if lengths is not None and pid not in counter:
            yield sequence_region(pid, lengths[pid])
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
                    GFF3_SO_TYPE,
                    str(span.start),
                    str(span.end),
                    f"{_gff_score(span.score, probability):.4f}",
                    ".",
                    ".",
                    attrs,
                ]
            )
            + "\n"
        )


def _gff_score(score: float, probability: Callable[[np.ndarray], np.ndarray] | None) -> float:
    return score if probability is None else float(probability(np.array([score]))[0])


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


#: InterProScan 5 TSV columns written (no header line, as InterProScan writes none)
INTERPROSCAN_COLUMNS = (
    "protein_accession",
    "sequence_md5",
    "length",
    "analysis",
    "signature_accession",
    "signature_description",
    "start",
    "stop",
    "score",
    "status",
    "date",
)


def interproscan_tsv_lines(
    rows: SpanRows,
    sequences: Mapping[str, str],
    concept: str,
    layer: int,
    date: str,
) -> Iterator[str]:
    """Spans in InterProScan's TSV layout (``INTERPROSCAN_COLUMNS``), for tools that read it.

    analysis = ``esm-tcav``, signature = the concept, description = the concept and layer,
    score = mean span score, status ``T``, ``date`` as dd-mm-yyyy; the MD5 is of the
    uppercase sequence, as InterProScan computes it; ``io.annotations.read_interproscan_tsv``
    reads it back.
    """
    md5: dict[str, str] = {}
    for pid, s in rows:
        seq = sequences[pid]
        if pid not in md5:
            md5[pid] = hashlib.md5(seq.encode("ascii"), usedforsecurity=False).hexdigest()
        yield tsv_line(
            [pid, md5[pid], len(seq), "esm-tcav", concept, f"{concept} (esm-tcav layer {layer})",
             s.start, s.end, f"{s.score:.4g}", "T", date]
        )  # fmt: skip


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
