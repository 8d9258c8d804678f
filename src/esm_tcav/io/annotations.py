"""Annotation files users already have, read as spans: InterProScan TSV, HMMER domtblout, FLIP
secondary structure and bindPredict binding residues.

These files hold spans (or labels) but no sequences (FLIP and bindPredict come with their own
FASTA): each reader returns ``{protein id: [Span, ...]}`` with 1-based inclusive coordinates,
named by the entry (a Pfam accession, an HMM name, a label), and ``attach_annotations`` puts them
on the proteins of a FASTA file. Protein IDs go through the FASTA reader's ID rule, so
``tr|A0A000|A0A000_STRVD`` in a TSV matches the FASTA record ``A0A000``. Bad lines raise one
``InputError`` naming the file and the line (the same ``fail`` as every reader).

(``read_ips_tsv``/``read_hmmer_domtbl`` are named apart from the issue-13 readers
``read_interproscan_tsv``/``read_domtblout`` on purpose, until the two are unified.)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from esm_tcav.io.proteins import Protein, Span, fail, spans_from_positions
from esm_tcav.io.readers import _fasta_id, iter_lines, read_fasta

__all__ = [
    "Annotations",
    "read_ips_tsv",
    "read_hmmer_domtbl",
    "read_binding_residues",
    "read_flip",
    "attach_annotations",
]

#: InterProScan TSV columns we use (0-based); the file has 11 to 15 columns.
_IPS_MIN_COLUMNS = 11


@dataclass
class Annotations:
    """Spans per protein from one annotation file, plus a description per entry name."""

    spans: dict[str, list[Span]]
    descriptions: dict[str, str]
    source: str

    def proteins_with(self, name: str) -> set[str]:
        return {pid for pid, spans in self.spans.items() if any(s.name == name for s in spans)}


def _int(path: Path, number: int, pid: str, value: str, what: str, fix: str) -> int:
    try:
        return int(value)
    except ValueError:
        fail(path, number, pid, f"{what} {value!r} is not an integer", fix)


def _span(path: Path, number: int, pid: str, start: int, end: int, length: int | None, name: str):
    if start < 1 or end < start or (length is not None and end > length):
        where = f" (protein length {length})" if length is not None else ""
        fail(
            path,
            number,
            pid,
            f"span {start}-{end}{where} is not a 1-based inclusive range inside the protein",
            "give start <= end within the sequence, 1-based",
        )
    return Span(start, end, name)


def read_ips_tsv(
    path: str | Path,
    analyses: Iterable[str] | None = None,
    use_interpro: bool = False,
) -> Annotations:
    """Read an InterProScan TSV (5 or 6): one span per match row, named by its signature.

    ``analyses`` keeps only those member databases (``Pfam``, ``Phobius``, ...; case as in the
    file); ``use_interpro`` names spans by the InterPro entry (column 12) instead and skips rows
    without one. The description of each name (column 6, or 13) is kept for reports.
    """
    path = Path(path)
    keep = {a.lower() for a in analyses} if analyses else None
    spans: dict[str, list[Span]] = {}
    desc: dict[str, str] = {}
    fix = "give InterProScan TSV output (protein, MD5, length, analysis, accession, ...)"
    for number, raw in enumerate(iter_lines(path), start=1):
        if not raw.strip() or raw.startswith("#"):
            continue
        cols = raw.rstrip("\n").split("\t")
        if len(cols) < _IPS_MIN_COLUMNS:
            fail(
                path, number, None, f"{len(cols)} tab-separated columns, at least 11 expected", fix
            )
        pid = _fasta_id(cols[0])
        if not pid:
            fail(path, number, None, "empty protein ID in column 1", fix)
        if keep is not None and cols[3].lower() not in keep:
            continue
        length = _int(path, number, pid, cols[2], "sequence length", fix)
        start = _int(path, number, pid, cols[6], "start", fix)
        end = _int(path, number, pid, cols[7], "end", fix)
        if use_interpro:
            name = cols[11].strip() if len(cols) > 11 else ""
            if name in ("", "-"):
                continue
            text = cols[12] if len(cols) > 12 else ""
        else:
            name, text = cols[4].strip(), cols[5]
        if not name:
            fail(path, number, pid, "empty signature accession in column 5", fix)
        spans.setdefault(pid, []).append(_span(path, number, pid, start, end, length, name))
        if text and text != "-":
            desc.setdefault(name, text)
    if not spans:
        which = f" for analyses {sorted(keep)}" if keep else ""
        fail(path, None, None, f"no match rows{which}", "check --analysis against column 4")
    return Annotations(spans, desc, str(path))


def read_hmmer_domtbl(path: str | Path, max_ievalue: float | None = None) -> Annotations:
    """Read HMMER ``--domtblout`` (hmmsearch or hmmscan): one span per domain, envelope
    coordinates, named by the profile.

    Which column is the sequence follows the program line in the file's trailer
    (``# Program: hmmscan`` puts the profile first); hmmsearch is assumed without one.
    ``max_ievalue`` drops domains whose independent E-value is above it.
    """
    path = Path(path)
    lines = list(iter_lines(path))
    program = next(
        (ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("# Program:")), "hmmsearch"
    )
    profile_first = program == "hmmscan"
    spans: dict[str, list[Span]] = {}
    desc: dict[str, str] = {}
    fix = "give the table HMMER writes with --domtblout (23 space-separated columns)"
    for number, raw in enumerate(lines, start=1):
        if not raw.strip() or raw.startswith("#"):
            continue
        cols = raw.split(None, 22)
        if len(cols) < 22:
            fail(path, number, None, f"{len(cols)} columns, at least 22 expected", fix)
        target, tacc, tlen, query, qacc, qlen = cols[:6]
        seq, seq_len, prof, prof_acc = (
            (query, qlen, target, tacc) if profile_first else (target, tlen, query, qacc)
        )
        pid = _fasta_id(seq)
        length = _int(path, number, pid, seq_len, "sequence length", fix)
        try:
            ievalue = float(cols[12])
        except ValueError:
            fail(path, number, pid, f"i-Evalue {cols[12]!r} is not a number", fix)
        if max_ievalue is not None and ievalue > max_ievalue:
            continue
        start = _int(path, number, pid, cols[19], "envelope start", fix)
        end = _int(path, number, pid, cols[20], "envelope end", fix)
        name = prof
        spans.setdefault(pid, []).append(_span(path, number, pid, start, end, length, name))
        text = cols[22].strip() if len(cols) > 22 else ""
        desc.setdefault(name, f"{prof_acc} {text}".strip(" -") if prof_acc != "-" else text)
    if not spans:
        fail(path, None, None, "no domain rows", fix)
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


def attach_annotations(
    proteins: Iterable[Protein], spans: Mapping[str, list[Span]], keep_others: bool = False
) -> list[Protein]:
    """The proteins with the annotation file's spans (replacing theirs unless ``keep_others``).

    A protein the file does not mention comes back without spans: for an annotation run over a
    whole FASTA that is the honest reading (no match = not the entry).
    """
    out = []
    for p in proteins:
        extra = tuple(spans.get(p.id, ()))
        for s in extra:
            if s.end > len(p.sequence):
                raise_range(p, s)
        out.append(Protein(p.id, p.sequence, (p.spans if keep_others else ()) + extra))
    return out


def raise_range(p: Protein, s: Span) -> None:
    fail(
        "annotations",
        None,
        p.id,
        f"span {s.name} {s.start}-{s.end} runs past the sequence ({len(p.sequence)} residues)",
        "use the FASTA the annotations were computed from",
    )
