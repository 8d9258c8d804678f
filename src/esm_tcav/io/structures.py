"""Protein structures (PDB, mmCIF, AlphaFold DB files): read a chain, align it to a scored
sequence, write per-residue values into the B-factor column, and viewer scripts.

Why an alignment: the sequence that was scored (a UniProt entry, an ESM input) and the residues
a structure models rarely agree one to one (unmodelled termini and loops, expression tags,
engineered mutations, renumbering). Residues are placed by a global alignment of the two
sequences (gemmi, BLOSUM62), and every mismatch and every structure residue without a scored
partner is reported, never silently painted with a neighbour's value.

Read with gemmi (the optional extra ``esm-tcav[structures]``); modified residues read as their
parent amino acid (MSE -> M), unknown ones as X. Only polymer residues of the first model are
read; the values go to every model's copy of those residues.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from esm_tcav.errors import InputError
from esm_tcav.io.files import atomic_write_with

__all__ = [
    "ChainResidues",
    "ResidueAlignment",
    "read_chain",
    "align_chain",
    "write_bfactors",
    "chimerax_defattr",
    "pymol_script",
    "PDB_BFACTOR_RANGE",
]

#: what the fixed-width PDB B-factor field (%6.2f) can hold; mmCIF has no limit
PDB_BFACTOR_RANGE = (-99.99, 999.99)
STRUCTURE_SUFFIXES = (".pdb", ".ent", ".cif", ".mmcif", ".pdb.gz", ".cif.gz", ".ent.gz")


def _gemmi() -> Any:
    try:
        import gemmi
    except ImportError:  # pragma: no cover - the extra is part of the dev install
        raise InputError(
            "reading structures needs gemmi; install it with `pip install 'esm-tcav[structures]'`"
        ) from None
    return gemmi


@dataclass(frozen=True)
class ChainResidues:
    """The polymer residues of one chain: one letter each, and their author labels."""

    path: Path
    chain: str
    sequence: str
    labels: tuple[str, ...]  # author residue number + insertion code, e.g. "45", "45A"
    names: tuple[str, ...]  # residue names as in the file (MSE, HIS, ...)

    @property
    def modified(self) -> list[tuple[str, str, str]]:
        """(label, file name, read as) of residues that are not one of the 20 standard ones."""
        standard = {
            "ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE",
            "LEU", "LYS", "MET", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL",
        }  # fmt: skip
        return [
            (lab, name, aa)
            for lab, name, aa in zip(self.labels, self.names, self.sequence, strict=True)
            if name not in standard
        ]


def _read(path: Path) -> Any:
    gemmi = _gemmi()
    if not path.is_file():
        raise InputError(f"{path}: structure file not found; check the path")
    try:
        st = gemmi.read_structure(str(path))
    except (RuntimeError, ValueError) as exc:
        raise InputError(
            f"{path}: not a readable PDB or mmCIF file ({exc}); give a .pdb or .cif file"
        ) from None
    st.setup_entities()
    if len(st) == 0:
        raise InputError(f"{path}: no model with coordinates; give a coordinate file")
    return st


def _polymer(st: Any, path: Path, chain: str) -> Any:
    names = [ch.name for ch in st[0]]
    if chain not in names:
        raise InputError(
            f"{path}: no chain {chain!r} (chains: {', '.join(dict.fromkeys(names))}); "
            "give one of them with --chain"
        )
    polymer = st[0][chain].get_polymer()
    if len(polymer) == 0:
        raise InputError(f"{path}: chain {chain!r} has no polymer residues; pick a protein chain")
    return polymer


def _label(residue: Any) -> str:
    return f"{residue.seqid.num}{residue.seqid.icode.strip()}"


def read_chain(path: str | Path, chain: str) -> ChainResidues:
    """The modelled polymer residues of ``chain`` in the first model, in file order."""
    gemmi = _gemmi()
    path = Path(path)
    polymer = _polymer(_read(path), path, chain)
    letters = []
    for r in polymer:
        info = gemmi.find_tabulated_residue(r.name)
        code = info.one_letter_code.upper() if info is not None and info.is_amino_acid() else "X"
        letters.append(code if code.strip() and code != "?" else "X")
    return ChainResidues(
        path,
        chain,
        "".join(letters),
        tuple(_label(r) for r in polymer),
        tuple(r.name for r in polymer),
    )


@dataclass
class ResidueAlignment:
    """Where each structure residue sits in the scored sequence (1-based, or None)."""

    positions: list[int | None]  # per structure residue
    mismatches: list[dict] = field(default_factory=list)  # aligned, different residue
    unaligned_structure: list[str] = field(default_factory=list)  # labels with no partner
    unaligned_sequence: int = 0  # scored residues the structure does not model
    identity: float = 0.0  # identical / aligned pairs

    def summary(self) -> dict:
        return {
            "aligned": sum(p is not None for p in self.positions),
            "identity": round(self.identity, 4),
            "mismatches": self.mismatches,
            "structure_residues_without_a_score": self.unaligned_structure,
            "scored_residues_not_in_the_structure": self.unaligned_sequence,
        }


def align_chain(chain: ChainResidues, sequence: str) -> ResidueAlignment:
    """Globally align the chain's residues to ``sequence`` (BLOSUM62) and list disagreements."""
    gemmi = _gemmi()
    result = gemmi.align_string_sequences(
        list(chain.sequence), list(sequence), [], gemmi.AlignmentScoring("b")
    )
    positions: list[int | None] = []
    out = ResidueAlignment(positions)
    i = j = 0  # next structure residue, next sequence residue (0-based)
    same = pairs = 0
    for count, op in re.findall(r"(\d+)([MID])", result.cigar_str()):
        for _ in range(int(count)):
            if op == "M":
                positions.append(j + 1)
                pairs += 1
                if chain.sequence[i] == sequence[j]:
                    same += 1
                else:
                    out.mismatches.append(
                        {
                            "structure_residue": chain.labels[i],
                            "structure": chain.sequence[i],
                            "position": j + 1,
                            "sequence": sequence[j],
                        }
                    )
                i += 1
                j += 1
            elif op == "I":  # in the structure only
                positions.append(None)
                out.unaligned_structure.append(chain.labels[i])
                i += 1
            else:  # "D": in the scored sequence only
                out.unaligned_sequence += 1
                j += 1
    out.identity = same / pairs if pairs else 0.0
    return out


def write_bfactors(
    src: str | Path, chain: str, values: Sequence[float | None], dst: str | Path, fill: float = 0.0
) -> int:
    """Copy ``src`` to ``dst`` with ``values`` (one per polymer residue of ``chain``, as
    ``read_chain`` lists them) as every atom's B-factor; None gets ``fill``. Other chains keep
    theirs. The format follows ``dst``'s suffix (.pdb or .cif). PDB's field holds -99.99..999.99:
    values outside are clipped there, and the count of clipped residues is returned."""
    src, dst = Path(src), Path(dst)
    st = _read(src)
    polymer = _polymer(st, src, chain)
    if len(values) != len(polymer):
        raise ValueError(f"{len(values)} values for {len(polymer)} residues of chain {chain}")
    by_label = {_label(r): v for r, v in zip(polymer, values, strict=True)}
    is_pdb = dst.name.lower().endswith((".pdb", ".ent"))
    lo, hi = PDB_BFACTOR_RANGE
    clipped = set()
    for model in st:
        if chain not in [ch.name for ch in model]:
            continue
        for residue in model[chain].get_polymer():
            value = by_label.get(_label(residue))
            b = fill if value is None else float(value)
            if is_pdb and not lo <= b <= hi:
                clipped.add(_label(residue))
                b = min(max(b, lo), hi)
            for atom in residue:
                atom.b_iso = b
    if is_pdb:
        atomic_write_with(dst, lambda tmp: st.write_pdb(str(tmp)))
    else:
        atomic_write_with(dst, lambda tmp: st.make_mmcif_document().write_file(str(tmp)))
    return len(clipped)


def chimerax_defattr(
    chain: str, labels: Sequence[str], values: Sequence[float | None], attribute: str
) -> str:
    """A ChimeraX attribute file (``open x.defattr``) assigning ``attribute`` per residue."""
    lines = [f"attribute: {attribute}", "match mode: 1-to-1", "recipient: residues"]
    lines += [
        f"\t/{chain}:{lab}\t{v:.4f}" for lab, v in zip(labels, values, strict=True) if v is not None
    ]
    return "\n".join(lines) + "\n"


def pymol_script(
    structure: str,
    chain: str,
    spans: Sequence[tuple[str, str]],
    concept: str,
    low: float,
    high: float,
) -> str:
    """A PyMOL script: load the painted file, colour chain ``chain`` by B-factor (the score),
    and select each predicted span (author residue labels, first and last)."""
    obj = "painted"
    lines = [
        f"load {structure}, {obj}",
        "hide everything",
        f"show cartoon, {obj}",
        f"spectrum b, blue_white_red, {obj} and chain {chain} and polymer, "
        f"minimum={low:.4f}, maximum={high:.4f}",
    ]
    for k, (first, last) in enumerate(spans, start=1):
        lines.append(f"select {concept}_{k}, {obj} and chain {chain} and resi {first}-{last}")
    lines.append("deselect")
    return "\n".join(lines) + "\n"
