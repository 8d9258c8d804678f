"""Embeddings out, as fair-esm users expect: one file per protein, readable without this package.

``esm-tcav extract MODEL in.fasta out/ --repr-layers 0 6 --include mean per_tok`` embeds a FASTA
with no concept config; ``esm-tcav store export CONFIG --out DIR`` writes a run's stored
embeddings in the same format. The format (``FORMAT``):

- ``index.json``: ``format``, ``model`` (name, fingerprint, hidden_size, num_layers), ``layers``,
  ``include``, ``file_format``, ``dtype`` and ``proteins``: one ``{id, file, length, seq_hash}``
  per protein in input order. ``index.tsv`` is the same list as a table (id, file, length).
- ``file_format: safetensors`` (default): ``<file>.safetensors`` per protein holding
  ``per_tok.<layer>`` float32 [L, H] (residues 1..L: no BOS/EOS rows, as fair-esm's
  ``representations``) and ``mean.<layer>`` float32 [H] (their mean, as fair-esm's
  ``mean_representations``); the protein ID is in the file's metadata (``id``).
  ``safetensors.numpy.load_file(path)`` reads it.
- ``file_format: npy``: ``<file>.per_tok.L<layer>.npy`` and ``<file>.mean.L<layer>.npy``;
  ``numpy.load(path, allow_pickle=False)`` reads them.

``<file>`` is the protein ID with characters other than letters, digits, ``.``, ``_`` and ``-``
replaced by ``_`` (plus a short hash when that changed it, so two IDs never share a file).
Every file is written atomically; a rerun skips proteins whose files exist (resumable), and a
folder made with another model, other layers or another format is refused.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from esm_tcav.engine.pooling import mean_pool
from esm_tcav.errors import ArtifactError, ConfigError
from esm_tcav.io.files import (
    atomic_write_json,
    atomic_write_lines,
    read_json,
    save_npy,
    save_tensors,
)
from esm_tcav.io.proteins import Protein
from esm_tcav.models.base import ProteinLM

__all__ = [
    "FORMAT",
    "INCLUDE",
    "FILE_FORMATS",
    "file_stem",
    "resolve_layers",
    "ExportFolder",
    "run_extract",
    "export_store",
]

FORMAT = "esm-tcav-extract/1"
INCLUDE = ("mean", "per_tok")
FILE_FORMATS = ("safetensors", "npy")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def file_stem(pid: str) -> str:
    """A file name for a protein ID (see the module doc); stable across runs."""
    stem = _UNSAFE.sub("_", pid).lstrip(".") or "_"
    if stem != pid:
        stem += "-" + hashlib.sha256(pid.encode()).hexdigest()[:8]
    return stem


def resolve_layers(layers: Sequence[int], num_layers: int) -> list[int]:
    """fair-esm's convention: 0 = embeddings, n = after block n, -1 = the last layer."""
    out = []
    for layer in layers:
        n = num_layers + 1 + layer if layer < 0 else layer
        if not 0 <= n <= num_layers:
            raise ConfigError(
                f"--repr-layers {layer}: the model has layers 0..{num_layers} (or -1 for the last)"
            )
        if n not in out:
            out.append(n)
    return out


class ExportFolder:
    """One export folder: its identity, which proteins are done, and how to write one."""

    def __init__(
        self,
        out: Path,
        model: dict,
        layers: Sequence[int],
        include: Sequence[str],
        file_format: str = "safetensors",
    ):
        bad = [i for i in include if i not in INCLUDE]
        if bad or not include:
            raise ConfigError(f"--include {' '.join(include)}: choose from {', '.join(INCLUDE)}")
        if file_format not in FILE_FORMATS:
            raise ConfigError(f"--format {file_format}: use one of {', '.join(FILE_FORMATS)}")
        self.out = Path(out)
        self.identity = {
            "format": FORMAT,
            "model": model,
            "layers": list(layers),
            "include": [i for i in INCLUDE if i in include],
            "file_format": file_format,
            "dtype": "float32",
        }
        self._check_identity()

    def _check_identity(self) -> None:
        path = self.out / "extract.json"
        if path.is_file():
            have = read_json(path)
            if have != self.identity:
                raise ArtifactError(
                    f"{path}: this folder holds embeddings of another model, layers or format "
                    f"({have.get('model', {}).get('name')}, layers {have.get('layers')}, "
                    f"{have.get('include')}, {have.get('file_format')}); give a new output folder"
                )
        else:
            atomic_write_json(path, self.identity)

    def files(self, stem: str) -> list[str]:
        if self.identity["file_format"] == "safetensors":
            return [f"{stem}.safetensors"]
        return [
            f"{stem}.{what}.L{layer}.npy"
            for what in self.identity["include"]
            for layer in self.identity["layers"]
        ]

    def done(self, protein: Protein) -> bool:
        return all((self.out / f).is_file() for f in self.files(file_stem(protein.id)))

    def write(
        self,
        protein: Protein,
        states: dict[int, np.ndarray] | None,
        means: dict[int, np.ndarray] | None = None,
    ) -> None:
        """Write one protein's arrays: {layer: [L, H]} residue states (for per_tok, and for the
        mean unless ``means`` gives it)."""
        stem = file_stem(protein.id)
        arrays: dict[str, np.ndarray] = {}
        for layer in self.identity["layers"]:
            if states is not None:
                rows = np.ascontiguousarray(states[layer], dtype=np.float32)
                if rows.shape[0] != protein.length:
                    raise ArtifactError(
                        f"{protein.id}: {rows.shape[0]} rows of states for {protein.length} "
                        "residues"
                    )
                if "per_tok" in self.identity["include"]:
                    arrays[f"per_tok.{layer}"] = rows
            if "mean" in self.identity["include"]:
                mean = means[layer] if means is not None else mean_pool(rows)
                arrays[f"mean.{layer}"] = np.asarray(mean, dtype=np.float32)
        if self.identity["file_format"] == "safetensors":
            save_tensors(self.out / f"{stem}.safetensors", arrays, {"id": protein.id})
        else:
            for key, value in arrays.items():
                what, layer = key.split(".")
                save_npy(self.out / f"{stem}.{what}.L{layer}.npy", value)

    def finish(self, proteins: Sequence[Protein]) -> dict:
        """Write index.json and index.tsv (input order); returns the index."""
        rows = [
            {
                "id": p.id,
                "file": self.files(file_stem(p.id))[0]
                if self.identity["file_format"] == "safetensors"
                else file_stem(p.id),
                "length": p.length,
                "seq_hash": p.seq_hash,
            }
            for p in proteins
        ]
        index = {**self.identity, "proteins": rows}
        atomic_write_json(self.out / "index.json", index)
        atomic_write_lines(
            self.out / "index.tsv",
            ["id\tfile\tlength\n"] + [f"{r['id']}\t{r['file']}\t{r['length']}\n" for r in rows],
        )
        return index


def _model_record(model: ProteinLM) -> dict:
    return {
        "name": model.name,
        "fingerprint": model.fingerprint,
        "hidden_size": model.hidden_size,
        "num_layers": model.num_layers,
    }


def run_extract(
    model: ProteinLM,
    proteins: Sequence[Protein],
    out: str | Path,
    layers: Sequence[int] = (-1,),
    include: Sequence[str] = ("mean",),
    file_format: str = "safetensors",
    toks_per_batch: int = 8192,
    progress: bool = True,
) -> dict:
    """Embed ``proteins`` with ``model`` into ``out`` (see the module doc); returns a summary."""
    from contextlib import nullcontext

    from esm_tcav.engine.forward import ForwardEngine
    from esm_tcav.ui import progress_bar

    chosen = resolve_layers(layers, model.num_layers)
    folder = ExportFolder(Path(out), _model_record(model), chosen, include, file_format)
    todo = [p for p in proteins if not folder.done(p)]
    engine = ForwardEngine(model, chosen, toks_per_batch=toks_per_batch)
    bar = progress_bar(len(todo), "extract") if progress else nullcontext(None)
    with bar as advance:
        for protein, states in engine.iter_residue_states(todo, progress=advance):
            folder.write(protein, states)
    index = folder.finish(proteins)
    return {
        "output": str(out),
        "proteins": len(proteins),
        "embedded": len(todo),
        "skipped_already_done": len(proteins) - len(todo),
        "layers": chosen,
        "include": index["include"],
        "file_format": file_format,
    }


def export_store(
    store,
    model: dict,
    proteins: Sequence[Protein],
    layers: Sequence[int],
    out: str | Path,
    include: Sequence[str] = ("mean", "per_tok"),
    file_format: str = "safetensors",
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Write an ``EmbeddingStore``'s states of ``proteins`` in the extract format.

    The store holds residue states in its ``residue_dtype`` (float16 by default); they are
    widened to float32 as stored, and the means are the store's mean rows, so the files equal
    the store exactly.
    """
    if "per_tok" in include:  # before any file is written
        for protein in proteins:
            h = protein.seq_hash
            if any(store.has(h, n) and not store.has(h, n, residues=True) for n in layers):
                raise ArtifactError(
                    f"store export: the store does not hold every residue state of protein "
                    f"{protein.id} (it keeps a training sample, store.residue_states, or none, "
                    "embed.per_residue); export --include mean, or rerun embed with "
                    "store.residue_states: all"
                )
    folder = ExportFolder(Path(out), model, list(layers), include, file_format)
    per_tok = "per_tok" in folder.identity["include"]
    for protein in (p for p in proteins if not folder.done(p)):
        states = {n: store.residues(protein.seq_hash, n) for n in layers} if per_tok else None
        folder.write(protein, states, {n: store.mean(protein.seq_hash, n) for n in layers})
        if progress:
            progress(1, protein.length)
    folder.finish(proteins)
    return {"output": str(out), "proteins": len(proteins), "layers": list(layers)}
