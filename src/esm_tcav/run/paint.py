"""`esm-tcav paint`: a concept's per-residue score on a protein structure.

Scores the chain's own sequence (or the sequence given with ``--sequence``, e.g. the UniProt
entry an AlphaFold model was built from), aligns it to the structure's modelled residues
(io/structures.py), and writes, next to each other in ``out``:

- ``<stem>.<concept>.pdb|cif``  the structure with the score in every atom's B-factor (residues
  without a scored partner get 0; other chains keep their B-factors)
- ``<stem>.<concept>.defattr``  a ChimeraX attribute file (``open`` it, then
  ``color byattribute esm_tcav_<concept>``)
- ``<stem>.<concept>.pml``      a PyMOL script: colours by score, selects each predicted span
- ``paint.json``                what was done: scores, spans, the alignment and every mismatch

The score is the concept's per-residue score (smoothed as detect smooths it); predicted spans
follow the concept's decision rule.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from esm_tcav.errors import InputError
from esm_tcav.io.files import atomic_write_json, atomic_write_text
from esm_tcav.io.proteins import Protein
from esm_tcav.io.readers import read_proteins
from esm_tcav.io.structures import (
    align_chain,
    chimerax_defattr,
    pymol_script,
    read_chain,
    write_bfactors,
)
from esm_tcav.run.api import Concept

log = logging.getLogger("esm_tcav.run.paint")
_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".pdb", ".ent", ".cif", ".mmcif"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    return name


def _scored_protein(sequence: Path | None, record: str | None, chain_seq: str, pid: str):
    if sequence is None:
        return Protein(pid, chain_seq)
    proteins = read_proteins(sequence)
    if record is not None:
        by_id = {p.id: p for p in proteins}
        if record not in by_id:
            raise InputError(f"{sequence}: no record {record!r}; give one of its IDs with --id")
        return by_id[record]
    if len(proteins) != 1:
        raise InputError(f"{sequence}: {len(proteins)} records; name the one to score with --id")
    return proteins[0]


def paint_structure(
    structure: str | Path,
    chain: str,
    concept: Concept,
    out: str | Path,
    sequence: str | Path | None = None,
    record: str | None = None,
    output_format: str | None = None,
) -> dict:
    """Score, align, paint and write the viewer files (see the module doc); returns paint.json."""
    structure, out = Path(structure), Path(out)
    residues = read_chain(structure, chain)
    stem = _stem(structure)
    protein = _scored_protein(
        Path(sequence) if sequence else None, record, residues.sequence, f"{stem}_{chain}"
    )
    scores = concept.score([protein])[0]
    spans = concept.spans([scores])[0]
    alignment = align_chain(residues, protein.sequence)
    values = [None if p is None else float(scores[p - 1]) for p in alignment.positions]
    if alignment.mismatches:
        shown = ", ".join(
            f"{m['structure']}{m['structure_residue']}/{m['sequence']}{m['position']}"
            for m in alignment.mismatches[:10]
        )
        log.warning(
            "%s chain %s: %d residue(s) differ from the scored sequence (structure/sequence: "
            "%s%s); their scores are the scored sequence's",
            structure, chain, len(alignment.mismatches), shown,
            " ..." if len(alignment.mismatches) > 10 else "",
        )  # fmt: skip
    if alignment.unaligned_structure:
        log.warning(
            "%s chain %s: %d modelled residue(s) have no partner in the scored sequence; they "
            "get B-factor 0",
            structure, chain, len(alignment.unaligned_structure),
        )  # fmt: skip
    name = _SAFE.sub("_", concept.name)
    fmt = output_format or ("cif" if structure.name.lower().endswith(("cif", "cif.gz")) else "pdb")
    if fmt not in ("pdb", "cif"):
        raise InputError(f"output format {fmt!r}: use pdb or cif")
    painted = out / f"{stem}.{name}.{fmt}"
    clipped = write_bfactors(structure, chain, values, painted)
    if clipped:
        log.warning("%s: %d residue score(s) clipped to the PDB B-factor range", painted, clipped)
    # the residue labels of each span's first and last aligned structure residue
    label_at = {p: lab for p, lab in zip(alignment.positions, residues.labels, strict=True) if p}
    span_rows, span_labels = [], []
    for s in spans:
        inside = [label_at[p] for p in range(s.start, s.end + 1) if p in label_at]
        ends = (inside[0], inside[-1]) if inside else None  # None: not modelled
        if ends:
            span_labels.append(ends)
        span_rows.append(
            {"start": s.start, "end": s.end, "score": round(s.score, 4), "residues": ends}
        )
    attribute = f"esm_tcav_{name}"
    atomic_write_text(
        out / f"{stem}.{name}.defattr",
        chimerax_defattr(chain, residues.labels, values, attribute),
    )
    low, high = float(np.min(scores)), float(np.max(scores))
    atomic_write_text(
        out / f"{stem}.{name}.pml",
        pymol_script(painted.name, chain, span_labels, name, low, high),
    )
    result = {
        "structure": str(structure),
        "chain": chain,
        "concept": concept.name,
        "layer": concept.layer,
        "threshold": concept.threshold,
        "scored_sequence": {"id": protein.id, "length": protein.length},
        "modified_residues": [
            {"residue": lab, "name": n, "read_as": aa} for lab, n, aa in residues.modified
        ],
        "alignment": alignment.summary(),
        "scores": [round(float(x), 4) for x in scores],
        "spans": span_rows,
        "clipped_to_pdb_range": clipped,
        "files": [painted.name, f"{stem}.{name}.defattr", f"{stem}.{name}.pml", "paint.json"],
    }
    atomic_write_json(out / "paint.json", result)
    return result
