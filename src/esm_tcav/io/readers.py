"""Protein readers: FASTA, JSONL, span files, TMbed, UniProt flat files and PDNA label files.

Every reader returns ``Protein`` records with 1-based inclusive ``Span`` annotations, so the rest
of the tool never sees a file format. Bad input raises ``InputError`` with one line naming the
file, the line, the record, the problem and the fix; every silent clean-up (lowercase, trailing
``*``, whitespace, alignment gaps) is logged on the ``esm_tcav.io.readers`` logger instead.

Files are read line by line (``iter_lines``, gzip too); FASTA streams record by record
(``fasta_records``/``iter_fasta``), so a proteome scan holds one record at a time.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import replace
from itertools import islice
from pathlib import Path

from esm_tcav.config import INPUT_FORMATS as _FORMATS
from esm_tcav.errors import InputError
from esm_tcav.io.proteins import (
    FIX_BAD_CHAR,
    GAPS,
    NOT_A_RESIDUE,
    Protein,
    Span,
    claim_id,
    fail,
    first_bad_char,
    location,
    normalize_sequence,
    spans_from_positions,
)

__all__ = [
    "TMBED_SPAN_NAMES",
    "iter_lines",
    "record_id",
    "fasta_records",
    "iter_fasta",
    "validate_fasta",
    "read_proteins",
    "read_fasta",
    "read_jsonl",
    "read_span_file",
    "attach_spans",
    "read_tmbed",
    "read_uniprot_dat",
    "read_pdna",
]

logger = logging.getLogger("esm_tcav.io.readers")

#: TMbed per-residue label -> span name (1, 2 and U are not spans).
TMBED_SPAN_NAMES: dict[str, str] = {
    "H": "transmembrane_helix",
    "h": "transmembrane_helix",
    "B": "transmembrane_beta",
    "b": "transmembrane_beta",
    "S": "signal_peptide",
}
_TMBED_LABELS = frozenset("HhBbS12U")


# --------------------------------------------------------------------------------------------
# Lines of a file
# --------------------------------------------------------------------------------------------


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return path.open("r", encoding="utf-8-sig")


def _bad_utf8_line(path: Path) -> int:
    """Line (1-based, counting '\\n') of the first byte that is not UTF-8."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 1


def iter_lines(path: str | Path) -> Iterator[str]:
    """Lines of a text file (optionally gzip-compressed), streaming, refusing empty files.

    The same lines as ``str.splitlines`` of the whole text: UTF-8 (a BOM is dropped), any line
    end. A file holding only whitespace raises ``InputError`` once it has been read through.
    """
    p = Path(path)
    if not p.exists():
        fail(p, None, None, "file not found", "check the path")
    if not p.is_file():
        fail(p, None, None, "is not a file", "give the path of a sequence file")
    blank = True
    try:
        with _open_text(p) as fh:
            for chunk in fh:
                for line in chunk.splitlines():
                    if blank and line.strip():
                        blank = False
                    yield line
    except UnicodeDecodeError:
        line = _bad_utf8_line(p)
        fail(p, line, None, "is not UTF-8 text", "save the file as plain UTF-8 (or ASCII) text")
    except (OSError, EOFError) as exc:
        if p.suffix == ".gz":
            fail(
                p, None, None, f"is not a valid gzip file ({exc})", "decompress it or re-create it"
            )
        fail(p, None, None, f"cannot be read ({exc})", "check the file")
    if blank:
        fail(p, None, None, "file is empty", "give a file with at least one record")


def _read_lines(path: str | Path) -> list[str]:
    return list(iter_lines(path))


def _clean(raw: str, where: str, has_coordinates: bool = False) -> str:
    """Normalize a record's sequence, logging each change; refuse gaps when spans refer to it."""
    if has_coordinates and any(c in GAPS for c in raw):
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
        fail(
            path,
            line,
            record,
            f"span {start}-{end} starts below 1",
            "coordinates are 1-based inclusive; add 1 to 0-based starts",
        )
    if start > end:
        fail(
            path,
            line,
            record,
            f"span {start}-{end} is reversed (start > end)",
            "swap start and end",
        )
    if length is not None and end > length:
        fail(
            path,
            line,
            record,
            f"span {start}-{end} ends past the sequence end (length {length})",
            "check that coordinates are 1-based inclusive and refer to this sequence",
        )


# --------------------------------------------------------------------------------------------
# FASTA
# --------------------------------------------------------------------------------------------

_UNIPROT_HEADER = re.compile(r"^(?:sp|tr)\|([^|]+)\|")


def record_id(header: str, tmbed: bool = False) -> str:
    """The protein ID rule, one for every format (README, "Protein IDs").

    The ID is the first word of the header (JSONL: of the ``accession`` value); a UniProt word
    ``sp|ACCESSION|NAME`` or ``tr|ACCESSION|NAME`` gives the ACCESSION in every format. TMbed
    headers (``>6hu9_i|P07255|COX9_YEAST``) give their first ``|`` field, where TMbed writes
    the ID; other formats keep the word whole (``gi|123|ref|NP_1|`` is one ID).
    """
    tokens = header.split()
    if not tokens:
        return ""
    match = _UNIPROT_HEADER.match(tokens[0])
    if match:
        return match.group(1)
    return tokens[0].split("|")[0] if tmbed else tokens[0]


def _fasta_id(header: str) -> str:
    return record_id(header)


def fasta_records(path: str | Path, check: bool = True) -> Iterator[tuple[str, int, str]]:
    """(ID, header line number, raw sequence) per record, one record in memory at a time.

    Structural errors always fail. ``check`` also refuses duplicate IDs and characters that are
    not residue letters (naming their own line); a second pass over a checked file skips them.
    """
    seen: dict[str, int] = {}
    current: tuple[str, int] | None = None
    parts: list[str] = []
    for number, raw in enumerate(iter_lines(path), start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith(">"):
            if current is not None:
                yield current[0], current[1], "".join(parts)
            pid = _fasta_id(line[1:])
            if not pid:
                fail(
                    path,
                    number,
                    None,
                    "header has no record ID",
                    "write '>ID description' with the ID right after '>'",
                )
            if check:
                claim_id(seen, pid, path, number, "ID")
            current, parts = (pid, number), []
            continue
        if current is None:
            fail(
                path,
                number,
                None,
                "sequence line before the first '>' header",
                "start each record with a '>ID' header line",
            )
        if check and (bad := first_bad_char(line)) is not None:
            fail(
                path,
                number,
                current[0],
                f"character {bad!r} {NOT_A_RESIDUE}",
                FIX_BAD_CHAR,
            )
        parts.append(line)
    if current is None:
        fail(path, None, None, "no FASTA records found", "start each record with a '>ID' header")
    yield current[0], current[1], "".join(parts)


def iter_fasta(
    path: str | Path, start: int = 0, stop: int | None = None, check: bool = True
) -> Iterator[Protein]:
    """Proteins of records [start, stop), read lazily (records before ``start`` only skipped).

    ``check=False`` is for a file ``validate_fasta`` passed: no duplicate/character checks
    and no second log of the clean-ups.
    """
    with closing(fasta_records(path, check)) as records:
        for pid, number, raw in islice(records, start, stop):
            if not raw:
                fail(
                    path,
                    number,
                    pid,
                    "empty sequence",
                    "add the sequence under the header or remove the record",
                )
            sequence, notes = normalize_sequence(raw, location(path, number, pid))
            if check:
                for note in notes:
                    logger.info(note)
            yield Protein(pid, sequence)


def read_fasta(path: str | Path) -> list[Protein]:
    """Read a FASTA file: ID = first word of the header (``sp|P12345|NAME`` gives ``P12345``)."""
    return list(iter_fasta(path))


def validate_fasta(
    path: str | Path, check: Callable[[str, str], None] | None = None
) -> tuple[int, int]:
    """Check every record without keeping any; returns (records, residues).

    For a proteome scan: bad input fails before anything is written; sequence clean-ups are
    logged once here. Holds the IDs (for the duplicate check), a few dozen bytes per protein.
    `check(sequence, where)` adds the model's own test (`ProteinLM.check_sequence`: a residue
    it has no token for), so that too fails here, naming the file and the record.
    """
    n = residues = 0
    for protein in iter_fasta(path):
        n += 1
        residues += protein.length
        if check is not None:
            check(protein.sequence, f"{path}: record {protein.id!r}")
    return n, residues


# --------------------------------------------------------------------------------------------
# JSONL
# --------------------------------------------------------------------------------------------


def _int_field(path: str | Path, line: int, record: str, obj: Mapping, key: str, what: str) -> int:
    if key not in obj:
        fail(path, line, record, f"{what} has no {key!r}", f"give {key!r} as a 1-based integer")
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            return int(value)
        fail(
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
    name is ``name`` (or ``motif_id`` when ``name`` is missing) and the span keeps its
    ``motif_id``, so `data.span_names` may select by either. A record's ``target_motif`` (a name
    or motif ID) marks the annotations of that motif as its concept spans; the record's other
    annotations are kept but not selected unless `span_names` asks for them. ``id`` is
    accepted for ``accession``.
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
            fail(
                path,
                number,
                None,
                f"malformed JSON ({exc.msg} at column {exc.colno})",
                "write one complete JSON object per line",
            )
        if not isinstance(obj, dict):
            fail(
                path,
                number,
                None,
                "line is not a JSON object",
                'write one object per line, e.g. {"accession": "P1", "sequence": "MK..."}',
            )
        key = "accession" if "accession" in obj else "id" if "id" in obj else None
        if key is None:
            fail(
                path,
                number,
                None,
                "missing key 'accession'",
                "give every record an 'accession' and a 'sequence'",
            )
        pid = obj[key]
        if not isinstance(pid, str) or not pid.strip():
            fail(
                path,
                number,
                None,
                f"{key!r} is empty or not a string",
                "give every record a non-empty text accession",
            )
        pid = record_id(pid)
        claim_id(seen, pid, path, number, "accession")
        if "sequence" not in obj:
            fail(
                path, number, pid, "missing key 'sequence'", "give every record a 'sequence' string"
            )
        raw_seq = obj["sequence"]
        if not isinstance(raw_seq, str):
            fail(path, number, pid, "'sequence' is not a string", "give the sequence as text")
        target = obj.get("target_motif")
        if target is not None and (not isinstance(target, str) or not target.strip()):
            fail(path, number, pid, "'target_motif' is not a non-empty string", "name one motif")
        target = target.strip() if target else None
        anns = obj.get("ground_truth_annotations") or []
        if not isinstance(anns, list):
            fail(
                path,
                number,
                pid,
                "'ground_truth_annotations' is not a list",
                "give a list of {motif_id, start, end, name} objects",
            )
        where = location(path, number, pid)
        if not raw_seq.strip():
            fail(path, number, pid, "empty sequence", "add the sequence or remove the record")
        bad = first_bad_char(raw_seq)
        if bad is not None:
            fail(path, number, pid, f"character {bad!r} {NOT_A_RESIDUE}", FIX_BAD_CHAR)
        sequence = _clean(raw_seq, where, has_coordinates=bool(anns))
        spans = []
        for index, ann in enumerate(anns, start=1):
            what = f"annotation {index}"
            if not isinstance(ann, dict):
                fail(
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
                fail(
                    path,
                    number,
                    pid,
                    f"{what} has no 'name' or 'motif_id'",
                    "name the concept the span belongs to",
                )
            _check_span(path, number, pid, start, end, len(sequence))
            motif = ann.get("motif_id")
            motif = motif.strip() if isinstance(motif, str) and motif.strip() else None
            name = name.strip()
            is_target = target is None or target in (name, motif)
            spans.append(Span(start, end, name, motif_id=motif, is_target=is_target))
        proteins.append(Protein(pid, sequence, tuple(spans)))
    return proteins


def select_spans(
    proteins: list[Protein],
    names: list[str] | None,
    source: str | Path,
    min_proteins: int = 1,
) -> list[Protein]:
    """Keep each protein's concept spans: those `names` picks (span names or motif IDs), or
    without `names` its target spans (JSONL `target_motif`; every span otherwise).

    A selection that picks spans in fewer than `min_proteins` proteins of a file that has spans
    is an `InputError` naming the file, the selection and the five most common span names that
    do occur (a silent miss would train a whole-protein concept instead).
    """
    chosen = [
        Protein(p.id, p.sequence, tuple(s for s in p.spans if s.selected_by(names)))
        for p in proteins
    ]
    if not any(p.spans for p in proteins):
        return chosen
    hits = sum(1 for p in chosen if p.spans)
    if hits < min_proteins:
        what = f"data.span_names {names}" if names else "the records' target_motif"
        raise InputError(
            f"{source}: {what} selects spans in {hits} protein(s), fewer than the "
            f"{min_proteins} needed; span names that occur (motif ID, spans): "
            f"{common_span_names(proteins)}; select by one of these names or motif IDs"
        )
    return chosen


def common_span_names(proteins: list[Protein], top: int = 5) -> str:
    """The `top` most common span names with their motif IDs and counts, for messages."""
    counts: Counter[tuple[str, str | None]] = Counter(
        (s.name, s.motif_id) for p in proteins for s in p.spans
    )
    return ", ".join(
        f"{name}" + (f" ({motif}, {n})" if motif and motif != name else f" ({n})")
        for (name, motif), n in counts.most_common(top)
    )


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
            fail(
                path,
                number,
                None,
                "empty accession in the first column",
                "write 'accession<TAB>start<TAB>end<TAB>name'",
            )
        if len(fields) == 1:
            if pid in span_line:
                fail(
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
            fail(
                path,
                number,
                pid,
                "a start without an end",
                "write 'accession<TAB>start<TAB>end[<TAB>name]' or just the accession",
            )
        if len(fields) > 4:
            fail(
                path,
                number,
                pid,
                f"{len(fields)} columns (at most 4 expected)",
                "write 'accession<TAB>start<TAB>end<TAB>name'",
            )
        try:
            start, end = int(fields[1]), int(fields[2])
        except ValueError:
            fail(
                path,
                number,
                pid,
                f"start/end {fields[1]!r}/{fields[2]!r} are not integers",
                "give 1-based integer coordinates (comment a header line out with '#')",
            )
        if pid in whole:
            fail(
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
        fail(
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
            fail(
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
    ``signal_peptide``. The ID follows ``record_id`` (the first ``|`` field of the header).
    """
    lines = _read_lines(path)
    content = [(n, line.strip()) for n, line in enumerate(lines, start=1) if line.strip()]
    proteins: list[Protein] = []
    seen: dict[str, int] = {}
    fix3 = "a TMbed record is three lines: '>header', sequence, labels"
    for i in range(0, len(content), 3):
        number, header = content[i]
        if not header.startswith(">"):
            fail(
                path,
                number,
                None,
                "expected a '>' header line",
                f"{fix3}; check the record above has exactly three lines",
            )
        pid = record_id(header[1:], tmbed=True)
        if not pid:
            fail(path, number, None, "header has no record ID", "write '>ID|...' headers")
        claim_id(seen, pid, path, number, "ID")
        if i + 2 >= len(content) or any(content[i + k][1].startswith(">") for k in (1, 2)):
            fail(path, number, pid, "record is incomplete (sequence or label line missing)", fix3)
        seq_no, raw_seq = content[i + 1]
        lab_no, labels = content[i + 2]
        bad = first_bad_char(raw_seq)
        if bad is not None:
            fail(path, seq_no, pid, f"character {bad!r} {NOT_A_RESIDUE}", FIX_BAD_CHAR)
        bad_labels = sorted(set(labels) - _TMBED_LABELS)
        if bad_labels:
            fail(
                path,
                lab_no,
                pid,
                f"label {bad_labels[0]!r} is not a TMbed label",
                "use H/h (TM helix), B/b (TM beta), S (signal), 1 (inside), 2 (outside), "
                "U (unknown)",
            )
        sequence = _clean(raw_seq, location(path, seq_no, pid), has_coordinates=True)
        if len(labels) != len(sequence):
            fail(
                path,
                lab_no,
                pid,
                f"label string has {len(labels)} characters but the sequence has "
                f"{len(sequence)} residues",
                "give exactly one label per residue",
            )
        proteins.append(Protein(pid, sequence, tuple(_label_spans(labels))))
    return proteins


_SNIFF_LINES = 12


def _looks_like_tmbed(lines: Sequence[str]) -> bool:
    content = [line.strip() for line in lines[:_SNIFF_LINES] if line.strip()]
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
            fail(
                path,
                entry["line"],
                None,
                "entry has no AC or ID name",
                "check the entry is a complete UniProt record",
            )
        claim_id(
            seen,
            pid,
            path,
            entry["line"],
            problem="duplicate entry",
            fix="keep one copy of each entry",
        )
        if entry["sq_line"] is None or not entry["seq"]:
            fail(
                path,
                entry["line"],
                pid,
                "entry has no sequence (SQ block)",
                "use complete UniProt entries with their SQ block",
            )
        sequence = _clean(
            "".join(entry["seq"]), location(path, entry["sq_line"], pid), has_coordinates=True
        )
        declared = entry["declared"]
        if declared is not None and declared != len(sequence):
            fail(
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
                fail(
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
            fail(
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
                fail(
                    path,
                    number,
                    entry["ac"] or None,
                    "unexpected line inside the SQ block",
                    "end the sequence block with '//'",
                )
            bad = first_bad_char(line)
            if bad is not None:
                fail(
                    path,
                    number,
                    entry["ac"] or None,
                    f"character {bad!r} {NOT_A_RESIDUE}",
                    FIX_BAD_CHAR,
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
        fail(
            path,
            entry["line"],
            entry["ac"] or entry["name"],
            "entry is not terminated by '//'",
            "the file is truncated; end every entry with a '//' line",
        )
    if not proteins:
        fail(path, None, None, "no UniProt entries found", "give a UniProt text (.dat) file")
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
    seen: dict[str, int] = {}
    current: str | None = None
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith(">"):
            current = _fasta_id(line[1:])
            if not current:
                fail(
                    label_fasta,
                    number,
                    None,
                    "header has no record ID",
                    "write '>ID' headers matching the sequence file",
                )
            claim_id(seen, current, label_fasta, number, "ID")
            positions[current] = (number, [])
            continue
        if current is None:
            fail(
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
                fail(
                    label_fasta,
                    number,
                    current,
                    f"{token!r} is not a residue index",
                    "list 1-based integer residue indices separated by spaces",
                )
    by_id = {p.id: p for p in proteins}
    for pid, (number, _) in positions.items():
        if pid not in by_id:
            fail(
                label_fasta,
                number,
                pid,
                f"is not in {sequence_fasta}",
                "pair the label file with its own sequence file",
            )
    result = []
    for protein in proteins:
        if protein.id not in positions:
            fail(
                label_fasta,
                None,
                protein.id,
                f"has no label record (it is in {sequence_fasta})",
                "add a '>ID' header with its binding residues to the label file",
            )
        number, pos = positions[protein.id]
        for p in pos:
            if p < 1 or p > protein.length:
                fail(
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
    head: list[str] = []  # enough lines to tell the format; the reader reads the file again
    first = ""
    with closing(iter_lines(path)) as lines:
        for line in lines:
            if len(head) < _SNIFF_LINES:
                head.append(line)
            if not first and line.strip():
                first = line
            if first and len(head) == _SNIFF_LINES:
                break
    if suffix == ".jsonl":
        return "jsonl"
    if first.startswith("ID   "):
        return "uniprot"
    if first.lstrip().startswith(">"):
        return "tmbed" if _looks_like_tmbed(head) else "fasta"
    if first.lstrip().startswith("{"):
        return "jsonl"
    if suffix in _FASTA_SUFFIXES:
        return "fasta"  # read_fasta names the problem (sequence before the first header)
    fail(
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
        fail(p, None, None, f"unknown format {fmt!r}", f"use one of {', '.join(_FORMATS)}")
    if fmt == "auto":
        fmt = _detect_format(p)
    reader = {
        "fasta": read_fasta,
        "jsonl": read_jsonl,
        "tmbed": read_tmbed,
        "uniprot": read_uniprot_dat,
    }[fmt]
    return reader(p)
