"""Protein readers: FASTA, JSONL, span files, TMbed, UniProt flat files and PDNA label files.

Every reader returns ``Protein`` records with 1-based inclusive ``Span`` annotations, so the rest
of the tool never sees a file format. Bad input raises ``InputError`` with one line naming the
file, the line, the record, the problem and the fix; every silent clean-up (lowercase, trailing
``*``, whitespace, alignment gaps) is logged on the ``esm_tcav.io.sequences`` logger instead.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NoReturn

import numpy as np

from esm_tcav.config import INPUT_FORMATS as _FORMATS
from esm_tcav.errors import InputError

__all__ = [
    "ESM2_ALPHABET",
    "STANDARD_AMINO_ACIDS",
    "NONSTANDARD_RESIDUES",
    "TMBED_SPAN_NAMES",
    "Span",
    "Protein",
    "sequence_hash",
    "normalize_sequence",
    "read_proteins",
    "read_fasta",
    "read_jsonl",
    "read_span_file",
    "attach_spans",
    "read_tmbed",
    "read_uniprot_dat",
    "read_pdna",
    "spans_from_positions",
]

logger = logging.getLogger("esm_tcav.io.sequences")

STANDARD_AMINO_ACIDS = frozenset("ACDEFGHIKLMNPQRSTVWY")
#: Residue letters ESM-2 has its own token for besides the 20 standard ones (kept as they are).
NONSTANDARD_RESIDUES = frozenset("XBUZO")
ESM2_ALPHABET = STANDARD_AMINO_ACIDS | NONSTANDARD_RESIDUES
_GAPS = frozenset("-.")
# Characters a raw sequence line may hold before normalization (checked line by line so that an
# error can name the line of the offending character).
_RAW_OK = ESM2_ALPHABET | {c.lower() for c in ESM2_ALPHABET} | _GAPS | {"*"} | set(" \t\r\n\f\v")

#: TMbed per-residue label -> span name (1, 2 and U are not spans).
TMBED_SPAN_NAMES: dict[str, str] = {
    "H": "transmembrane_helix",
    "h": "transmembrane_helix",
    "B": "transmembrane_beta",
    "b": "transmembrane_beta",
    "S": "signal_peptide",
}
_TMBED_LABELS = frozenset("HhBbS12U")

_FIX_BAD_CHAR = "remove it or replace it with X"


# --------------------------------------------------------------------------------------------
# Data classes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """A named stretch of residues, 1-based inclusive (as UniProt, Pfam and GFF3 write them)."""

    start: int
    end: int
    name: str

    def __post_init__(self) -> None:
        # Readers check spans first with a file/line message; this guards programmatic use.
        for key in ("start", "end"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool):
                raise InputError(
                    f"span {self.name!r}: {key} {value!r} is not an integer; "
                    "give 1-based integer coordinates"
                )
        if self.start < 1:
            raise InputError(
                f"span {self.name!r} {self.start}-{self.end}: start is below 1; "
                "coordinates are 1-based inclusive"
            )
        if self.start > self.end:
            raise InputError(
                f"span {self.name!r} {self.start}-{self.end}: start > end; swap start and end"
            )

    @property
    def length(self) -> int:
        """Number of residues covered (both ends included)."""
        return self.end - self.start + 1


@dataclass(frozen=True)
class Protein:
    """One protein: its ID, its cleaned sequence and its annotated spans."""

    id: str
    sequence: str
    spans: tuple[Span, ...] = field(default=())

    def __post_init__(self) -> None:
        if not isinstance(self.spans, tuple):
            object.__setattr__(self, "spans", tuple(self.spans))
        if not self.id:
            raise InputError("a protein has an empty ID; give every record an ID")
        if not self.sequence:
            raise InputError(f"record {self.id!r}: empty sequence; add the residues or drop it")
        bad = set(self.sequence) - ESM2_ALPHABET
        if bad:
            raise InputError(
                f"record {self.id!r}: character {sorted(bad)[0]!r} is not in the ESM-2 alphabet; "
                "clean the sequence with normalize_sequence first"
            )
        for span in self.spans:
            if not isinstance(span, Span):
                raise InputError(f"record {self.id!r}: span {span!r} is not a Span")
            if span.end > len(self.sequence):
                raise InputError(
                    f"record {self.id!r}: span {span.name!r} {span.start}-{span.end} ends past "
                    f"the sequence end (length {len(self.sequence)}); check the coordinates"
                )

    @property
    def length(self) -> int:
        """Number of residues."""
        return len(self.sequence)

    @property
    def seq_hash(self) -> str:
        """Content key for the embedding store (same sequence, same embeddings, any ID)."""
        return sequence_hash(self.sequence)

    @property
    def span_names(self) -> tuple[str, ...]:
        """Sorted distinct span names, e.g. to list the concepts a file carries."""
        return tuple(sorted({s.name for s in self.spans}))

    def spans_named(self, name: str) -> tuple[Span, ...]:
        """The spans of one concept (span name), in file order."""
        return tuple(s for s in self.spans if s.name == name)

    def residue_mask(self, name: str | None = None) -> np.ndarray:
        """Boolean per-residue mask (row i-1 = residue i) of the spans named ``name`` (all if None).

        Per-residue CAV training and span metrics work on these masks rather than on spans.
        """
        mask = np.zeros(len(self.sequence), dtype=bool)
        for span in self.spans:
            if name is None or span.name == name:
                mask[span.start - 1 : span.end] = True
        return mask


def sequence_hash(sequence: str) -> str:
    """Short, stable content hash (sha256 hex, first 20 characters) of a cleaned sequence."""
    return hashlib.sha256(sequence.encode("ascii")).hexdigest()[:20]


# --------------------------------------------------------------------------------------------
# Helpers for messages and files
# --------------------------------------------------------------------------------------------


def _where(path: str | Path, line: int | None = None, record: str | None = None) -> str:
    text = str(path)
    if line is not None:
        text += f":{line}"
    if record is not None:
        text += f": record {record!r}"
    return text


def _fail(
    path: str | Path, line: int | None, record: str | None, problem: str, fix: str
) -> NoReturn:
    raise InputError(f"{_where(path, line, record)}: {problem}; {fix}")


def _claim_id(
    seen: dict[str, int], pid: str, path: str | Path, number: int, what: str = "ID"
) -> None:
    """Record an ID's first line; a second record with it is an error naming both lines."""
    if pid in seen:
        _fail(
            path,
            number,
            pid,
            f"duplicate record ID (first at line {seen[pid]})",
            f"give every record a unique {what}",
        )
    seen[pid] = number


def _read_lines(path: str | Path) -> list[str]:
    """Read a text file (optionally gzip-compressed) into lines, refusing empty files."""
    p = Path(path)
    if not p.exists():
        _fail(p, None, None, "file not found", "check the path")
    if not p.is_file():
        _fail(p, None, None, "is not a file", "give the path of a sequence file")
    data = p.read_bytes()
    if p.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            _fail(
                p, None, None, f"is not a valid gzip file ({exc})", "decompress it or re-create it"
            )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        _fail(p, line, None, "is not UTF-8 text", "save the file as plain UTF-8 (or ASCII) text")
    if not text.strip():
        _fail(p, None, None, "file is empty", "give a file with at least one record")
    return text.splitlines()


def _first_bad_char(text: str) -> str | None:
    for char in text:
        if char not in _RAW_OK:
            return char
    return None


def _clean(raw: str, where: str, has_coordinates: bool = False) -> str:
    """Normalize a record's sequence, logging each change; refuse gaps when spans refer to it."""
    if has_coordinates and any(c in _GAPS for c in raw):
        raise InputError(
            f"{where}: the sequence contains alignment gaps ('-' or '.') but the record has "
            "residue coordinates, so they would be ambiguous; remove the gaps and renumber the "
            "coordinates"
        )
    sequence, notes = normalize_sequence(raw, where)
    for note in notes:
        logger.info(note)
    return sequence


def _check_span(
    path: str | Path,
    line: int | None,
    record: str,
    start: int,
    end: int,
    length: int | None,
) -> None:
    if start < 1:
        _fail(
            path,
            line,
            record,
            f"span {start}-{end} starts below 1",
            "coordinates are 1-based inclusive; add 1 to 0-based starts",
        )
    if start > end:
        _fail(
            path,
            line,
            record,
            f"span {start}-{end} is reversed (start > end)",
            "swap start and end",
        )
    if length is not None and end > length:
        _fail(
            path,
            line,
            record,
            f"span {start}-{end} ends past the sequence end (length {length})",
            "check that coordinates are 1-based inclusive and refer to this sequence",
        )


def spans_from_positions(positions: Iterable[int], name: str) -> list[Span]:
    """Merge 1-based residue positions into maximal runs of consecutive residues."""
    spans: list[Span] = []
    ordered = sorted(set(positions))
    if not ordered:
        return spans
    start = prev = ordered[0]
    for pos in ordered[1:]:
        if pos != prev + 1:
            spans.append(Span(start, prev, name))
            start = pos
        prev = pos
    spans.append(Span(start, prev, name))
    return spans


# --------------------------------------------------------------------------------------------
# Normalization
# --------------------------------------------------------------------------------------------


def normalize_sequence(seq: str, where: str = "sequence") -> tuple[str, list[str]]:
    """Clean a sequence the way ESM-2's alphabet allows and say what changed.

    Uppercases, removes whitespace, one trailing stop ``*`` and alignment gaps (``-``, ``.``).
    X, B, U, Z and O are ESM-2 tokens and are kept. Any other character raises ``InputError``
    (``where`` names the file, line and record in the message). Returns the cleaned sequence and
    one human-readable note per kind of change, each starting with ``where``.
    """
    notes: list[str] = []
    for pos, char in enumerate(seq, start=1):
        if char not in _RAW_OK:
            raise InputError(
                f"{where}: character {char!r} (position {pos}) is not in the ESM-2 alphabet; "
                f"{_FIX_BAD_CHAR}"
            )
    text = seq.strip()
    n_space = sum(1 for c in text if c.isspace())
    if n_space:
        text = "".join(text.split())
        notes.append(f"{where}: removed {n_space} whitespace character(s) inside the sequence")
    if text.endswith("*"):
        text = text[:-1]
        notes.append(f"{where}: removed the trailing stop '*'")
    if "*" in text:
        pos = seq.index("*") + 1
        raise InputError(
            f"{where}: character '*' (position {pos}) is not in the ESM-2 alphabet (only one "
            f"trailing stop is removed); {_FIX_BAD_CHAR}"
        )
    n_lower = sum(1 for c in text if c.islower())
    if n_lower:
        text = text.upper()
        notes.append(f"{where}: uppercased {n_lower} lowercase residue(s)")
    n_gap = sum(1 for c in text if c in _GAPS)
    if n_gap:
        text = "".join(c for c in text if c not in _GAPS)
        notes.append(f"{where}: removed {n_gap} alignment gap character(s) ('-' or '.')")
    if not text:
        raise InputError(f"{where}: the sequence is empty; add the residues or remove the record")
    nonstandard = {c: text.count(c) for c in sorted(NONSTANDARD_RESIDUES) if c in text}
    if nonstandard:
        counts = ", ".join(f"{c}: {n}" for c, n in nonstandard.items())
        notes.append(f"{where}: kept non-standard residues as ESM-2 tokens ({counts})")
    return text, notes


# --------------------------------------------------------------------------------------------
# FASTA
# --------------------------------------------------------------------------------------------

_UNIPROT_HEADER = re.compile(r"^(?:sp|tr)\|([^|]+)\|")


def _fasta_id(header: str) -> str:
    tokens = header.split()
    if not tokens:
        return ""
    match = _UNIPROT_HEADER.match(tokens[0])
    return match.group(1) if match else tokens[0]


def _fasta_records(path: str | Path, lines: Sequence[str]) -> list[tuple[str, int, str]]:
    """(id, header line number, raw sequence) for each record, with structural checks."""
    records: list[tuple[str, int, str]] = []
    seen: dict[str, int] = {}
    current: tuple[str, int] | None = None
    parts: list[str] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith(">"):
            if current is not None:
                records.append((current[0], current[1], "".join(parts)))
            pid = _fasta_id(line[1:])
            if not pid:
                _fail(
                    path,
                    number,
                    None,
                    "header has no record ID",
                    "write '>ID description' with the ID right after '>'",
                )
            _claim_id(seen, pid, path, number, "ID")
            current = (pid, number)
            parts = []
            continue
        if current is None:
            _fail(
                path,
                number,
                None,
                "sequence line before the first '>' header",
                "start each record with a '>ID' header line",
            )
        bad = _first_bad_char(line)
        if bad is not None:
            _fail(
                path,
                number,
                current[0],
                f"character {bad!r} is not in the ESM-2 alphabet",
                _FIX_BAD_CHAR,
            )
        parts.append(line)
    if current is not None:
        records.append((current[0], current[1], "".join(parts)))
    if not records:
        _fail(path, None, None, "no FASTA records found", "start each record with a '>ID' header")
    return records


def read_fasta(path: str | Path) -> list[Protein]:
    """Read a FASTA file: ID = first word of the header (``sp|P12345|NAME`` gives ``P12345``)."""
    lines = _read_lines(path)
    proteins = []
    for pid, number, raw in _fasta_records(path, lines):
        if not raw:
            _fail(
                path,
                number,
                pid,
                "empty sequence",
                "add the sequence under the header or remove the record",
            )
        proteins.append(Protein(pid, _clean(raw, _where(path, number, pid))))
    return proteins


# --------------------------------------------------------------------------------------------
# JSONL
# --------------------------------------------------------------------------------------------


def _int_field(path: str | Path, line: int, record: str, obj: Mapping, key: str, what: str) -> int:
    if key not in obj:
        _fail(path, line, record, f"{what} has no {key!r}", f"give {key!r} as a 1-based integer")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        _fail(
            path,
            line,
            record,
            f"{what}: {key!r} is {value!r}, not an integer",
            f"give {key!r} as a 1-based integer",
        )
    return value


def read_jsonl(path: str | Path) -> list[Protein]:
    """Read JSON Lines records ``{accession, sequence, ground_truth_annotations?}``.

    Annotations are ``{motif_id, start, end, name}`` with 1-based inclusive coordinates; the span
    name is ``name`` (or ``motif_id`` when ``name`` is missing). ``id`` is accepted for
    ``accession``.
    """
    lines = _read_lines(path)
    proteins: list[Protein] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            _fail(
                path,
                number,
                None,
                f"malformed JSON ({exc.msg} at column {exc.colno})",
                "write one complete JSON object per line",
            )
        if not isinstance(obj, dict):
            _fail(
                path,
                number,
                None,
                "line is not a JSON object",
                'write one object per line, e.g. {"accession": "P1", "sequence": "MK..."}',
            )
        key = "accession" if "accession" in obj else "id" if "id" in obj else None
        if key is None:
            _fail(
                path,
                number,
                None,
                "missing key 'accession'",
                "give every record an 'accession' and a 'sequence'",
            )
        pid = obj[key]
        if not isinstance(pid, str) or not pid.strip():
            _fail(
                path,
                number,
                None,
                f"{key!r} is empty or not a string",
                "give every record a non-empty text accession",
            )
        pid = pid.strip()
        _claim_id(seen, pid, path, number, "accession")
        if "sequence" not in obj:
            _fail(
                path, number, pid, "missing key 'sequence'", "give every record a 'sequence' string"
            )
        raw_seq = obj["sequence"]
        if not isinstance(raw_seq, str):
            _fail(path, number, pid, "'sequence' is not a string", "give the sequence as text")
        anns = obj.get("ground_truth_annotations") or []
        if not isinstance(anns, list):
            _fail(
                path,
                number,
                pid,
                "'ground_truth_annotations' is not a list",
                "give a list of {motif_id, start, end, name} objects",
            )
        where = _where(path, number, pid)
        if not raw_seq.strip():
            _fail(path, number, pid, "empty sequence", "add the sequence or remove the record")
        bad = _first_bad_char(raw_seq)
        if bad is not None:
            _fail(
                path, number, pid, f"character {bad!r} is not in the ESM-2 alphabet", _FIX_BAD_CHAR
            )
        sequence = _clean(raw_seq, where, has_coordinates=bool(anns))
        spans = []
        for index, ann in enumerate(anns, start=1):
            what = f"annotation {index}"
            if not isinstance(ann, dict):
                _fail(
                    path,
                    number,
                    pid,
                    f"{what} is not a JSON object",
                    "give {motif_id, start, end, name} objects",
                )
            start = _int_field(path, number, pid, ann, "start", what)
            end = _int_field(path, number, pid, ann, "end", what)
            name = ann.get("name") or ann.get("motif_id")
            if not isinstance(name, str) or not name.strip():
                _fail(
                    path,
                    number,
                    pid,
                    f"{what} has no 'name' or 'motif_id'",
                    "name the concept the span belongs to",
                )
            _check_span(path, number, pid, start, end, len(sequence))
            spans.append(Span(start, end, name.strip()))
        proteins.append(Protein(pid, sequence, tuple(spans)))
    return proteins


# --------------------------------------------------------------------------------------------
# Span files
# --------------------------------------------------------------------------------------------


def read_span_file(path: str | Path) -> dict[str, list[Span]]:
    """Read ``accession [TAB start TAB end [TAB name]]`` lines (``#`` starts a comment).

    A line with only an accession marks the whole protein as a concept example (empty span list).
    Spans without a name get the name ``""``; ``attach_spans`` fills in its ``default_name``.
    Ranges are checked against the sequences in ``attach_spans``.
    """
    lines = _read_lines(path)
    spans: dict[str, list[Span]] = {}
    whole: dict[str, int] = {}
    span_line: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = [f.strip() for f in line.split("\t")] if "\t" in line else line.split(None, 3)
        pid = fields[0]
        if not pid:
            _fail(
                path,
                number,
                None,
                "empty accession in the first column",
                "write 'accession<TAB>start<TAB>end<TAB>name'",
            )
        if len(fields) == 1:
            if pid in span_line:
                _fail(
                    path,
                    number,
                    pid,
                    f"listed as a whole protein here but with spans at line {span_line[pid]}",
                    "keep either the whole-protein line or its spans",
                )
            whole.setdefault(pid, number)
            spans.setdefault(pid, [])
            continue
        if len(fields) == 2:
            _fail(
                path,
                number,
                pid,
                "a start without an end",
                "write 'accession<TAB>start<TAB>end[<TAB>name]' or just the accession",
            )
        if len(fields) > 4:
            _fail(
                path,
                number,
                pid,
                f"{len(fields)} columns (at most 4 expected)",
                "write 'accession<TAB>start<TAB>end<TAB>name'",
            )
        try:
            start, end = int(fields[1]), int(fields[2])
        except ValueError:
            _fail(
                path,
                number,
                pid,
                f"start/end {fields[1]!r}/{fields[2]!r} are not integers",
                "give 1-based integer coordinates (comment a header line out with '#')",
            )
        if pid in whole:
            _fail(
                path,
                number,
                pid,
                f"has spans here but is listed as a whole protein at line {whole[pid]}",
                "keep either the whole-protein line or its spans",
            )
        _check_span(path, number, pid, start, end, None)
        name = fields[3] if len(fields) == 4 else ""
        span_line.setdefault(pid, number)
        spans.setdefault(pid, []).append(Span(start, end, name))
    if not spans:
        _fail(
            path,
            None,
            None,
            "no spans or accessions found (only comments or blank lines)",
            "add one 'accession[<TAB>start<TAB>end[<TAB>name]]' line per example",
        )
    return spans


def attach_spans(
    proteins: Sequence[Protein],
    spans_by_id: Mapping[str, Sequence[Span]],
    default_name: str,
    source: str | Path | None = None,
) -> list[Protein]:
    """Return copies of ``proteins`` with the spans of ``spans_by_id`` added.

    Unnamed spans get ``default_name``. Every ID in ``spans_by_id`` must be a protein and every
    span must fit its sequence, else ``InputError`` (``source`` names the span file in messages).
    Proteins not in ``spans_by_id`` are returned unchanged.
    """
    where = str(source) if source is not None else "span file"
    by_id = {p.id: p for p in proteins}
    for pid in spans_by_id:
        if pid not in by_id:
            _fail(
                where,
                None,
                pid,
                f"is not among the {len(by_id)} sequences",
                "check that span-file IDs match the sequence-file IDs",
            )
    result = []
    for protein in proteins:
        extra = spans_by_id.get(protein.id)
        if not extra:
            result.append(protein)
            continue
        new = []
        for span in extra:
            _check_span(where, None, protein.id, span.start, span.end, protein.length)
            new.append(Span(span.start, span.end, span.name or default_name))
        result.append(replace(protein, spans=protein.spans + tuple(new)))
    return result


# --------------------------------------------------------------------------------------------
# TMbed
# --------------------------------------------------------------------------------------------


def _label_spans(labels: str) -> list[Span]:
    spans: list[Span] = []
    run_name: str | None = None
    run_start = 0
    for pos, label in enumerate(labels + "1", start=1):  # sentinel closes the last run
        name = TMBED_SPAN_NAMES.get(label)
        if name != run_name:
            if run_name is not None:
                spans.append(Span(run_start, pos - 1, run_name))
            run_name, run_start = name, pos
    return spans


def read_tmbed(path: str | Path) -> list[Protein]:
    """Read TMbed three-line records (header, sequence, per-residue labels).

    Maximal runs of H/h become ``transmembrane_helix`` spans, B/b ``transmembrane_beta``, S
    ``signal_peptide``. The ID is the first ``|`` field of the header.
    """
    lines = _read_lines(path)
    content = [(n, line.strip()) for n, line in enumerate(lines, start=1) if line.strip()]
    proteins: list[Protein] = []
    seen: dict[str, int] = {}
    fix3 = "a TMbed record is three lines: '>header', sequence, labels"
    for i in range(0, len(content), 3):
        number, header = content[i]
        if not header.startswith(">"):
            _fail(
                path,
                number,
                None,
                "expected a '>' header line",
                f"{fix3}; check the record above has exactly three lines",
            )
        tokens = header[1:].split()
        pid = tokens[0].split("|")[0] if tokens else ""
        if not pid:
            _fail(path, number, None, "header has no record ID", "write '>ID|...' headers")
        _claim_id(seen, pid, path, number, "ID")
        if i + 2 >= len(content) or any(content[i + k][1].startswith(">") for k in (1, 2)):
            _fail(path, number, pid, "record is incomplete (sequence or label line missing)", fix3)
        seq_no, raw_seq = content[i + 1]
        lab_no, labels = content[i + 2]
        bad = _first_bad_char(raw_seq)
        if bad is not None:
            _fail(
                path, seq_no, pid, f"character {bad!r} is not in the ESM-2 alphabet", _FIX_BAD_CHAR
            )
        bad_labels = sorted(set(labels) - _TMBED_LABELS)
        if bad_labels:
            _fail(
                path,
                lab_no,
                pid,
                f"label {bad_labels[0]!r} is not a TMbed label",
                "use H/h (TM helix), B/b (TM beta), S (signal), 1 (inside), 2 (outside), "
                "U (unknown)",
            )
        sequence = _clean(raw_seq, _where(path, seq_no, pid), has_coordinates=True)
        if len(labels) != len(sequence):
            _fail(
                path,
                lab_no,
                pid,
                f"label string has {len(labels)} characters but the sequence has "
                f"{len(sequence)} residues",
                "give exactly one label per residue",
            )
        proteins.append(Protein(pid, sequence, tuple(_label_spans(labels))))
    return proteins


def _looks_like_tmbed(lines: Sequence[str]) -> bool:
    content = [line.strip() for line in lines[:12] if line.strip()]
    if len(content) < 3 or not content[0].startswith(">") or content[1].startswith(">"):
        return False
    labels = content[2]
    return (
        set(labels) <= _TMBED_LABELS
        and bool(set(labels) & {"1", "2"})
        and len(labels) == len(content[1].rstrip("*"))
    )


# --------------------------------------------------------------------------------------------
# UniProt flat file
# --------------------------------------------------------------------------------------------

_PLAIN_LOCATION = re.compile(r"(\d+)(?:\.\.(\d+))?")
_OLD_POSITION = re.compile(r"[<>?]?\d*\??")


def read_uniprot_dat(path: str | Path, features: set[str] | None = None) -> list[Protein]:
    """Read a UniProt text (``.dat``) file: ID = first accession, spans = feature table.

    Each ``FT`` feature with a plain location (``12..45`` or ``394``) becomes a span named by its
    key (ZN_FING, TRANSMEM, SIGNAL, DOMAIN, ...); ``features`` keeps only the keys given. Features
    with uncertain ends (``<1``, ``>``, ``?``) or on another isoform (``P12345-2:3..9``) are
    skipped and counted in the log: their residues cannot be placed on this sequence.
    """
    lines = _read_lines(path)
    proteins: list[Protein] = []
    seen: dict[str, int] = {}
    entry: dict | None = None
    skipped = 0

    def finish(end_line: int) -> None:
        assert entry is not None
        pid = entry["ac"] or entry["name"]
        if not pid:
            _fail(
                path,
                entry["line"],
                None,
                "entry has no AC or ID name",
                "check the entry is a complete UniProt record",
            )
        if pid in seen:
            _fail(
                path,
                entry["line"],
                pid,
                f"duplicate entry (first at line {seen[pid]})",
                "keep one copy of each entry",
            )
        seen[pid] = entry["line"]
        if entry["sq_line"] is None or not entry["seq"]:
            _fail(
                path,
                entry["line"],
                pid,
                "entry has no sequence (SQ block)",
                "use complete UniProt entries with their SQ block",
            )
        sequence = _clean(
            "".join(entry["seq"]), _where(path, entry["sq_line"], pid), has_coordinates=True
        )
        declared = entry["declared"]
        if declared is not None and declared != len(sequence):
            _fail(
                path,
                entry["sq_line"],
                pid,
                f"sequence has {len(sequence)} residues but the ID line says {declared} AA",
                "the entry is truncated or edited; download it again",
            )
        spans = []
        for number, key, start, end in entry["ft"]:
            _check_span(path, number, pid, start, end, len(sequence))
            spans.append(Span(start, end, key))
        proteins.append(Protein(pid, sequence, tuple(spans)))

    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        code = line[:2]
        if code == "ID":
            if entry is not None:
                _fail(
                    path,
                    number,
                    entry["ac"] or None,
                    "new ID line before the '//' that ends the previous entry",
                    "end every entry with a '//' line",
                )
            tokens = line.split()
            declared = re.search(r"(\d+)\s+AA\.", line)
            entry = {
                "line": number,
                "name": tokens[1] if len(tokens) > 1 else "",
                "ac": "",
                "declared": int(declared.group(1)) if declared else None,
                "ft": [],
                "seq": [],
                "sq_line": None,
            }
            continue
        if entry is None:
            _fail(
                path,
                number,
                None,
                "line outside an entry (expected an 'ID' line)",
                "give a UniProt text file whose entries start with 'ID' and end with '//'",
            )
        if code == "//":
            finish(number)
            entry = None
        elif entry["sq_line"] is not None:
            if not line.startswith(" "):
                _fail(
                    path,
                    number,
                    entry["ac"] or None,
                    "unexpected line inside the SQ block",
                    "end the sequence block with '//'",
                )
            bad = _first_bad_char(line)
            if bad is not None:
                _fail(
                    path,
                    number,
                    entry["ac"] or None,
                    f"character {bad!r} is not in the ESM-2 alphabet",
                    _FIX_BAD_CHAR,
                )
            entry["seq"].append("".join(line.split()))  # blocks of 10 are layout, not a change
        elif code == "AC" and not entry["ac"]:
            entry["ac"] = line[5:].split(";")[0].strip()
        elif code == "SQ":
            entry["sq_line"] = number
        elif code == "FT" and len(line) > 5 and line[5] != " ":
            tokens = line[5:].split()
            if len(tokens) < 2:
                continue
            key = tokens[0]
            if features is not None and key not in features:
                continue
            loc = tokens[1]
            # Pre-2019 format: 'FT   KEY   start  end  description'.
            if (
                len(tokens) >= 3
                and ".." not in loc
                and _OLD_POSITION.fullmatch(loc)
                and _OLD_POSITION.fullmatch(tokens[2])
            ):
                loc = loc if loc == tokens[2] else f"{loc}..{tokens[2]}"
            match = _PLAIN_LOCATION.fullmatch(loc)
            if match is None:
                skipped += 1
                continue
            start = int(match.group(1))
            end = int(match.group(2)) if match.group(2) else start
            entry["ft"].append((number, key, start, end))
    if entry is not None:
        _fail(
            path,
            entry["line"],
            entry["ac"] or entry["name"],
            "entry is not terminated by '//'",
            "the file is truncated; end every entry with a '//' line",
        )
    if not proteins:
        _fail(path, None, None, "no UniProt entries found", "give a UniProt text (.dat) file")
    if skipped:
        logger.info(
            "%s: skipped %d feature(s) with uncertain or isoform-specific positions", path, skipped
        )
    return proteins


# --------------------------------------------------------------------------------------------
# PDNA (sequence FASTA + label FASTA of binding-residue indices)
# --------------------------------------------------------------------------------------------


def read_pdna(
    sequence_fasta: str | Path, label_fasta: str | Path, name: str = "dna_binding"
) -> list[Protein]:
    """Read a PDNA-543/PDNA-41 pair: the label file lists 1-based binding residues per record.

    Consecutive residues merge into spans named ``name``. Both files must list the same records.
    """
    proteins = read_fasta(sequence_fasta)
    lines = _read_lines(label_fasta)
    positions: dict[str, tuple[int, list[int]]] = {}
    current: str | None = None
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith(">"):
            current = _fasta_id(line[1:])
            if not current:
                _fail(
                    label_fasta,
                    number,
                    None,
                    "header has no record ID",
                    "write '>ID' headers matching the sequence file",
                )
            if current in positions:
                _fail(
                    label_fasta,
                    number,
                    current,
                    f"duplicate record ID (first at line {positions[current][0]})",
                    "give every record a unique ID",
                )
            positions[current] = (number, [])
            continue
        if current is None:
            _fail(
                label_fasta,
                number,
                None,
                "residue indices before the first '>' header",
                "start each record with a '>ID' header line",
            )
        for token in line.replace(",", " ").split():
            try:
                positions[current][1].append(int(token))
            except ValueError:
                _fail(
                    label_fasta,
                    number,
                    current,
                    f"{token!r} is not a residue index",
                    "list 1-based integer residue indices separated by spaces",
                )
    by_id = {p.id: p for p in proteins}
    for pid, (number, _) in positions.items():
        if pid not in by_id:
            _fail(
                label_fasta,
                number,
                pid,
                f"is not in {sequence_fasta}",
                "pair the label file with its own sequence file",
            )
    result = []
    for protein in proteins:
        if protein.id not in positions:
            _fail(
                label_fasta,
                None,
                protein.id,
                f"has no label record (it is in {sequence_fasta})",
                "add a '>ID' header with its binding residues to the label file",
            )
        number, pos = positions[protein.id]
        for p in pos:
            if p < 1 or p > protein.length:
                _fail(
                    label_fasta,
                    number,
                    protein.id,
                    f"residue index {p} is outside the sequence (length {protein.length})",
                    "give 1-based indices into this record's sequence",
                )
        result.append(replace(protein, spans=tuple(spans_from_positions(pos, name))))
    return result


# --------------------------------------------------------------------------------------------
# Dispatch
# --------------------------------------------------------------------------------------------

_FASTA_SUFFIXES = {".fasta", ".fa", ".faa", ".fas", ".fna", ".fsa"}


def _detect_format(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = Path(name).suffix
    lines = _read_lines(path)
    first = next(line for line in lines if line.strip())
    if suffix == ".jsonl":
        return "jsonl"
    if first.startswith("ID   "):
        return "uniprot"
    if first.lstrip().startswith(">"):
        return "tmbed" if _looks_like_tmbed(lines) else "fasta"
    if first.lstrip().startswith("{"):
        return "jsonl"
    if suffix in _FASTA_SUFFIXES:
        return "fasta"  # read_fasta names the problem (sequence before the first header)
    _fail(
        path,
        None,
        None,
        f"cannot tell the sequence format (first line {first[:30]!r})",
        "use FASTA, JSONL, TMbed or UniProt .dat, or give the format explicitly",
    )


def read_proteins(path: str | Path, fmt: str = "auto") -> list[Protein]:
    """Read proteins from any supported format; ``fmt="auto"`` looks at extension and content.

    ``.jsonl`` is JSONL; a first line starting ``ID   `` is UniProt text; ``>`` headers followed by
    a label line of TMbed letters are TMbed, otherwise FASTA. ``fmt`` may be ``"fasta"``,
    ``"jsonl"``, ``"tmbed"`` or ``"uniprot"``. (PDNA pairs need ``read_pdna``.)
    """
    p = Path(path)
    if fmt not in _FORMATS:
        _fail(p, None, None, f"unknown format {fmt!r}", f"use one of {', '.join(_FORMATS)}")
    if fmt == "auto":
        fmt = _detect_format(p)
    reader = {
        "fasta": read_fasta,
        "jsonl": read_jsonl,
        "tmbed": read_tmbed,
        "uniprot": read_uniprot_dat,
    }[fmt]
    return reader(p)
