"""Annotation files users already have, read as spans: InterProScan TSV, HMMER domtblout, FLIP
secondary structure and bindPredict binding residues.

These files hold spans (or labels) but no sequences (FLIP and bindPredict come with their own
FASTA): each reader returns ``{protein id: [Span, ...]}`` with 1-based inclusive coordinates,
named by the entry (a Pfam accession, an HMM name, a label), and ``io.readers.attach_spans`` puts
them on the proteins of a FASTA file. Protein IDs go through the FASTA reader's ID rule, so
``tr|A0A000|A0A000_STRVD`` in a TSV matches the FASTA record ``A0A000``. Bad lines raise one
``InputError`` naming the file and the line (the same ``fail`` as every reader).

These are the only InterProScan and domtblout readers of the package (``library build`` and
the round trip of ``detect``'s ``spans.interproscan.tsv`` both use them).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from esm_tcav.io.proteins import Protein, Span, fail, spans_from_positions
from esm_tcav.io.readers import _check_span, _fasta_id, iter_lines, read_fasta

__all__ = [
    "Annotations",
    "read_interproscan_tsv",
    "read_domtblout",
    "read_binding_residues",
    "read_flip",
]

logger = logging.getLogger("esm_tcav.io.annotations")

#: InterProScan 5/6 TSV: at least 11 tab-separated columns per match line.
_IPS_MIN_COLUMNS = 11
_IPS_FIX = (
    "give InterProScan's TSV output (-f TSV): protein, md5, length, analysis, signature, "
    "description, start, stop, score, status, date[, InterPro, ...]"
)
_DOMTBL_COLUMNS = 22  # fixed columns before the free-text description
_DOMTBL_FIX = "give HMMER's --domtblout output (hmmscan, hmmsearch or pyhmmer's 'domains' format)"


@dataclass
class Annotations:
    """Spans per protein from one annotation file, plus a description per entry name."""

    spans: dict[str, list[Span]]
    descriptions: dict[str, str]
    source: str

    def proteins_with(self, name: str) -> set[str]:
        return {pid for pid, spans in self.spans.items() if any(s.name == name for s in spans)}


def _int(path: Path, number: int, pid: str | None, value: str, what: str, fix: str) -> int:
    try:
        return int(value)
    except ValueError:
        fail(path, number, pid, f"{what} {value!r} is not an integer", fix)


def _accession_stem(accession: str) -> str:
    """``PF00096.26`` -> ``PF00096``: the version suffix changes with every Pfam release."""
    stem, dot, version = accession.partition(".")
    return stem if dot and version.isdigit() else accession


def read_interproscan_tsv(
    path: str | Path,
    analyses: Iterable[str] | None = None,
    use_interpro: bool = False,
) -> Annotations:
    """Read an InterProScan TSV (5 or 6, ``-f TSV``): one span per match row.

    Spans are named by the member-database signature accession (``PF00096``, ``SM00355``, ...),
    so a concept is chosen by accession as Pfam users do; ``use_interpro`` names them by the
    InterPro entry (column 12) instead and skips rows without one. ``analyses`` keeps only those
    member databases (``["Pfam"]``, matched without regard to case). The sequence length column is
    checked against each span; the description of each name (column 6, or 13) is kept for reports.
    A file with no match row (for ``analyses``) is an error.
    """
    path = Path(path)
    keep = {a.lower() for a in analyses} if analyses is not None else None
    spans: dict[str, list[Span]] = {}
    desc: dict[str, str] = {}
    for number, raw in enumerate(iter_lines(path), start=1):
        line = raw.rstrip("\r\n")
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        if len(cols) < _IPS_MIN_COLUMNS:
            problem = f"{len(cols)} tab-separated columns, at least 11 expected"
            fail(path, number, None, problem, _IPS_FIX)
        pid = _fasta_id(cols[0])
        if not pid:
            fail(path, number, None, "empty protein ID in column 1", _IPS_FIX)
        if keep is not None and cols[3].strip().lower() not in keep:
            continue
        length = _int(path, number, pid, cols[2], "sequence length", _IPS_FIX)
        start = _int(path, number, pid, cols[6], "start", _IPS_FIX)
        end = _int(path, number, pid, cols[7], "end", _IPS_FIX)
        if use_interpro:
            name = cols[11].strip() if len(cols) > 11 else ""
            if name in ("", "-"):
                continue
            text = cols[12] if len(cols) > 12 else ""
        else:
            name, text = cols[4].strip(), cols[5]
        if not name:
            fail(path, number, pid, "empty signature accession in column 5", _IPS_FIX)
        _check_span(path, number, pid, start, end, length)
        spans.setdefault(pid, []).append(Span(start, end, name))
        if text and text != "-":
            desc.setdefault(name, text)
    if not spans:
        which = f" for analyses {sorted(keep)}" if keep else ""
        fail(path, None, None, f"no match rows{which}", "check --analysis against column 4")
    return Annotations(spans, desc, str(path))


def _domtbl_program(lines: list[str]) -> str | None:
    """``hmmscan``/``hmmsearch`` from the ``# Program:`` trailer HMMER writes, else None."""
    for line in lines:
        if line.startswith("# Program:"):
            return line.split(":", 1)[1].strip() or None
    return None


def read_domtblout(
    path: str | Path,
    max_evalue: float | None = None,
    coordinates: str = "envelope",
    protein_column: str = "auto",
) -> Annotations:
    """Read HMMER ``--domtblout`` (hmmsearch, hmmscan, pyhmmer): one span per domain.

    Each domain becomes a ``Span`` named by the profile's accession without its version
    (``PF00096``, as InterProScan names it), or by the profile name when it has no accession; the
    description of the name is the profile name and the target description. Coordinates are the
    envelope (``env from``/``env to``, what Pfam reports as domain boundaries) or
    ``"alignment"``. ``max_evalue`` drops domains with a larger independent E-value.

    Which column is the protein depends on the program: hmmsearch (profile against proteins) puts
    the protein in the target column, hmmscan (protein against a profile database) in the query
    column. ``"auto"`` reads HMMER's ``# Program:`` trailer and, when it is missing (pyhmmer),
    takes hmmsearch's layout and logs that choice; ``"target"``/``"query"`` settle it.
    """
    if coordinates not in ("envelope", "alignment"):
        raise ValueError(f"coordinates must be 'envelope' or 'alignment', not {coordinates!r}")
    if protein_column not in ("auto", "target", "query"):
        raise ValueError(f"protein_column must be auto/target/query, not {protein_column!r}")
    path = Path(path)
    lines = list(iter_lines(path))
    if protein_column == "auto":
        program = _domtbl_program(lines)
        protein_column = "query" if program == "hmmscan" else "target"
        if program is None:
            logger.info("%s: no '# Program:' line; reading proteins from the target column", path)
    protein_at, profile_at = (0, 3) if protein_column == "target" else (3, 0)
    start_at = 19 if coordinates == "envelope" else 17
    spans: dict[str, list[Span]] = {}
    desc: dict[str, str] = {}
    for number, raw in enumerate(lines, start=1):
        if not raw.strip() or raw.startswith("#"):
            continue
        cols = raw.split(None, _DOMTBL_COLUMNS)
        if len(cols) < _DOMTBL_COLUMNS:
            fail(path, number, None, f"{len(cols)} columns, at least 22 expected", _DOMTBL_FIX)
        pid = _fasta_id(cols[protein_at])
        profile, accession = cols[profile_at], cols[profile_at + 1]
        name = _accession_stem(accession) if accession != "-" else profile
        length = _int(path, number, pid, cols[protein_at + 2], "sequence length", _DOMTBL_FIX)
        try:
            ievalue = float(cols[12])
        except ValueError:
            fail(path, number, pid, f"i-Evalue {cols[12]!r} is not a number", _DOMTBL_FIX)
        if max_evalue is not None and ievalue > max_evalue:
            continue
        which = "envelope" if coordinates == "envelope" else "alignment"
        start = _int(path, number, pid, cols[start_at], f"{which} start", _DOMTBL_FIX)
        end = _int(path, number, pid, cols[start_at + 1], f"{which} end", _DOMTBL_FIX)
        _check_span(path, number, pid, start, end, length)
        spans.setdefault(pid, []).append(Span(start, end, name))
        text = cols[22].strip() if len(cols) > 22 else ""
        text = "" if text == "-" else text
        desc.setdefault(name, f"{profile} {text}".strip() if name != profile else text)
    if not spans:
        fail(path, None, None, "no domain rows", _DOMTBL_FIX)
    return Annotations(spans, desc, str(path))


def read_binding_residues(path: str | Path, name: str) -> Annotations:
    """bindPredict's ``ACC<TAB>1-based positions, comma-separated``: runs of positions as spans."""
    path = Path(path)
    spans: dict[str, list[Span]] = {}
    fix = "write 'accession<TAB>pos,pos,...' (1-based residue positions)"
    for number, raw in enumerate(iter_lines(path), start=1):
        if not raw.strip():
            continue
        pid, _, rest = raw.partition("\t")
        pid = pid.strip()
        if not pid or not rest.strip():
            fail(path, number, pid or None, "no tab-separated position list", fix)
        positions = [
            _int(path, number, pid, tok, "position", fix)
            for tok in rest.replace(" ", "").split(",")
            if tok
        ]
        if min(positions) < 1:
            fail(path, number, pid, f"position {min(positions)} is below 1", fix)
        if pid in spans:
            fail(path, number, pid, "protein listed twice", "keep one line per protein")
        spans[pid] = spans_from_positions(positions, name)
    return Annotations(spans, {}, str(path))


def read_flip(
    sequences: str | Path, labels: str | Path, mask: str | Path | None = None
) -> list[Protein]:
    """FLIP secondary structure: three FASTA files with the same records in the same order.

    Spans ``helix`` (H) and ``strand`` (E); residues with mask 0 (unresolved) count as outside
    every span. A label or mask string of the wrong length names the record and the line.
    """
    proteins = read_fasta(sequences)

    def strings(path: str | Path) -> list[tuple[str, int, str]]:
        out: list[tuple[str, int, str]] = []
        for number, raw in enumerate(iter_lines(path), start=1):
            if raw.startswith(">"):
                out.append((_fasta_id(raw[1:]), number, ""))
            elif out:
                pid, n, s = out[-1]
                out[-1] = (pid, n, s + raw.strip())
            elif raw.strip():
                fail(path, number, None, "text before the first '>' header", "start with '>ID'")
        return out

    labs = strings(labels)
    masks = strings(mask) if mask is not None else [(p.id, 0, "") for p in proteins]
    if len(labs) != len(proteins) or len(masks) != len(proteins):
        fail(labels, None, None, "not the same number of records as the sequence file", "pair it")
    out = []
    for prot, (lid, lnum, lab), (_, mnum, msk) in zip(proteins, labs, masks, strict=True):
        if lid != prot.id:
            fail(labels, lnum, lid, f"record order differs from {sequences} ({prot.id})", "pair")
        if len(lab) != len(prot.sequence) or (msk and len(msk) != len(prot.sequence)):
            bad, n = (labels, lnum) if len(lab) != len(prot.sequence) else (mask, mnum)
            fail(bad, n, lid, f"string length differs from the sequence ({len(prot.sequence)})", "")
        spans: list[Span] = []
        for code, name in (("H", "helix"), ("E", "strand")):
            pos = [i + 1 for i, c in enumerate(lab) if c == code and (not msk or msk[i] == "1")]
            spans += spans_from_positions(pos, name)
        out.append(Protein(prot.id, prot.sequence, tuple(sorted(spans, key=lambda s: s.start))))
    return out
