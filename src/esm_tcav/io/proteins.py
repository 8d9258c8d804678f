"""Proteins and spans: the records every reader returns, and the rules they share.

``Protein`` (ID, cleaned sequence, 1-based inclusive ``Span``s), ``normalize_sequence`` (the one
clean-up of raw sequence text), ``sequence_hash`` (the embedding store's content key), and the
message conventions of bad input: one line naming the file, the line, the record, the problem and
the fix (``location``, ``fail``), with the one duplicate-ID check (``claim_id``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import numpy as np

from esm_tcav.errors import InputError

__all__ = [
    "RESIDUE_LETTERS",
    "NOT_A_RESIDUE",
    "STANDARD_AMINO_ACIDS",
    "NONSTANDARD_RESIDUES",
    "Span",
    "Protein",
    "check_residue_letters",
    "sequence_hash",
    "normalize_sequence",
    "spans_from_positions",
    "first_bad_char",
    "location",
    "fail",
    "claim_id",
]

STANDARD_AMINO_ACIDS = frozenset("ACDEFGHIKLMNPQRSTVWY")
#: Non-standard residue letters (unknown, Asx, selenocysteine, Glx, pyrrolysine): kept as they
#: are when reading; each model backend decides what it does with them (`check_sequence`).
NONSTANDARD_RESIDUES = frozenset("XBUZO")
#: Any uppercase letter is a residue as far as reading goes: which letters a model has a token
#: for is the backend's rule (ESM-2 refuses J, ProtT5 maps U/Z/O/B to X), checked at embed time.
RESIDUE_LETTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
NOT_A_RESIDUE = "is not a residue letter"
GAPS = frozenset("-.")
# Characters a raw sequence line may hold before normalization (checked line by line so that an
# error can name the line of the offending character).
_RAW_OK = RESIDUE_LETTERS | {c.lower() for c in RESIDUE_LETTERS} | GAPS | {"*"} | set(" \t\r\n\f\v")

FIX_BAD_CHAR = "remove it or replace it with X"


# --------------------------------------------------------------------------------------------
# Data classes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Span:
    """A named stretch of residues, 1-based inclusive (as UniProt, Pfam and GFF3 write them)."""

    start: int
    end: int
    name: str
    # the annotation's accession (a JSONL `motif_id`, e.g. a Pfam ID) when it has one
    motif_id: str | None = field(default=None, compare=False)
    # False for annotations of other motifs in a JSONL record that names its `target_motif`
    is_target: bool = field(default=True, compare=False)

    def selected_by(self, names: Iterable[str] | None) -> bool:
        """Whether a span selection (`data.span_names`: names or motif IDs) picks this span;
        without one, whether it is its record's target (JSONL `target_motif`, else every span)."""
        if names is None:
            return self.is_target
        wanted = set(names)
        return self.name in wanted or (self.motif_id is not None and self.motif_id in wanted)

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
        check_residue_letters(self.id, self.sequence)
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


def check_residue_letters(pid: str, sequence: str) -> None:
    """Refuse a cleaned sequence holding anything but uppercase letters (digits, symbols, gaps).

    Which letters a model reads is the model's rule (`ProteinLM.check_sequence`, at embed time).
    """
    bad = set(sequence) - RESIDUE_LETTERS
    if bad:
        raise InputError(
            f"record {pid!r}: character {sorted(bad)[0]!r} {NOT_A_RESIDUE}; "
            "clean the sequence with normalize_sequence first"
        )


def sequence_hash(sequence: str) -> str:
    """Short, stable content hash (sha256 hex, first 20 characters) of a cleaned sequence."""
    return hashlib.sha256(sequence.encode("ascii")).hexdigest()[:20]


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


def first_bad_char(text: str) -> str | None:
    """The first character no sequence line may hold (even before clean-up), or None."""
    for char in text:
        if char not in _RAW_OK:
            return char
    return None


def normalize_sequence(seq: str, where: str = "sequence") -> tuple[str, list[str]]:
    """Clean a sequence and say what changed (model-neutral: the model checks its alphabet).

    Uppercases, removes whitespace, one trailing stop ``*`` and alignment gaps (``-``, ``.``).
    Letters are kept (X, B, U, Z and O too: the backend decides what they become). Any other
    character raises ``InputError`` (``where`` names the file, line and record in the message).
    Returns the cleaned sequence and one note per kind of change, each starting with ``where``.
    """
    notes: list[str] = []
    for pos, char in enumerate(seq, start=1):
        if char not in _RAW_OK:
            raise InputError(
                f"{where}: character {char!r} (position {pos}) {NOT_A_RESIDUE}; {FIX_BAD_CHAR}"
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
            f"{where}: character '*' (position {pos}) {NOT_A_RESIDUE} (only one "
            f"trailing stop is removed); {FIX_BAD_CHAR}"
        )
    n_lower = sum(1 for c in text if c.islower())
    if n_lower:
        text = text.upper()
        notes.append(f"{where}: uppercased {n_lower} lowercase residue(s)")
    n_gap = sum(1 for c in text if c in GAPS)
    if n_gap:
        text = "".join(c for c in text if c not in GAPS)
        notes.append(f"{where}: removed {n_gap} alignment gap character(s) ('-' or '.')")
    if not text:
        raise InputError(f"{where}: the sequence is empty; add the residues or remove the record")
    nonstandard = {c: text.count(c) for c in sorted(NONSTANDARD_RESIDUES) if c in text}
    if nonstandard:
        counts = ", ".join(f"{c}: {n}" for c, n in nonstandard.items())
        notes.append(f"{where}: kept non-standard residues ({counts})")
    return text, notes


# --------------------------------------------------------------------------------------------
# Messages of bad input, and the duplicate-ID check
# --------------------------------------------------------------------------------------------


def location(path: str | Path, line: int | None = None, record: str | None = None) -> str:
    """``path:line: record 'ID'``, the prefix of every input message (parts left out if None)."""
    text = str(path)
    if line is not None:
        text += f":{line}"
    if record is not None:
        text += f": record {record!r}"
    return text


def fail(
    path: str | Path, line: int | None, record: str | None, problem: str, fix: str
) -> NoReturn:
    """Raise the one-line ``InputError``: where, what is wrong, how to fix it."""
    raise InputError(f"{location(path, line, record)}: {problem}; {fix}")


def claim_id(
    seen: dict[str, int],
    pid: str,
    path: str | Path,
    number: int,
    what: str = "ID",
    problem: str = "duplicate record ID",
    fix: str | None = None,
) -> None:
    """Record an ID's first line; a second record with it is an error naming both lines.

    Every reader calls this (IDs key the embedding store, GFF3 seqids and result tables).
    """
    if pid in seen:
        fail(
            path,
            number,
            pid,
            f"{problem} (first at line {seen[pid]})",
            fix or f"give every record a unique {what}",
        )
    seen[pid] = number
