"""`esm-tcav scan`: every concept of a library along every protein of a FASTA, streaming.

One forward pass per protein (tiles for long ones) gives all tapped layers at once; one matrix
product on the device turns them into a score per residue and concept (`ForwardEngine`); spans
per concept use that concept's smoothing, threshold, minimum length and merge gap (the same
functions as `detect`, so a scan and a detect run call the same spans).

Proteome scale:

- **streaming**: the FASTA is read record by record (one validation pass first, so bad input
  fails before anything is written), in chunks of `chunk_proteins`; results are appended to the
  output files chunk by chunk. Memory depends on the chunk, not on the number of proteins.
- **resumable**: after each chunk the outputs are flushed and fsynced, then `checkpoint.json`
  records the chunks done and the byte length of every output file (written atomically). A
  rerun truncates the files to those lengths and continues with the next chunk: nothing
  finished is scanned again and the result is byte-identical to an uninterrupted run.
- **shardable**: `shard=(i, n)` scans the i-th of n contiguous blocks of records into
  `out/shards/<i>-of-<n>/`; `merge_shards(out, n)` concatenates them in order into `out/`, the
  same files an unsharded run writes. `slurm_commands` gives the array and merge commands.
- **store**: with `store=` (`--store`), proteins whose states at the library's layers are in the
  embedding store (per-residue, any run wrote them) are scored from it with the same projection,
  and only the others go through the model. A scan does not write the store: a proteome's
  per-residue states would dwarf the scan's outputs.

Outputs (1-based inclusive coordinates): `scan.gff3` (every concept's spans), `scan.tsv` (the
same spans as a table, the columns of `detect`'s spans.tsv), `proteins.tsv` (per protein and
concept: spans and maximum smoothed score; for protein-level concepts also `protein_score`, the
CAV on the mean-pooled protein, by which proteins are ranked), `summary.json`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import shutil
import time
from collections.abc import Sequence
from itertools import islice
from pathlib import Path
from typing import IO

import numpy as np

from esm_tcav.concepts.grade import WEAK
from esm_tcav.concepts.library import Library, load_library
from esm_tcav.config import SCAN_DEFAULTS as _D
from esm_tcav.config import ScanSettings
from esm_tcav.engine.batching import release_heap
from esm_tcav.engine.forward import ForwardEngine, Projection, describe_device
from esm_tcav.errors import ArtifactError, ConfigError
from esm_tcav.io.files import (
    atomic_write_json,
    atomic_write_with,
    check_output_dir,
    content_hash,
    disk_error,
    read_json,
)
from esm_tcav.io.locks import folder_lock
from esm_tcav.io.logs import detach, log_to_file, start_capture
from esm_tcav.io.proteins import Protein
from esm_tcav.io.readers import iter_fasta, validate_fasta
from esm_tcav.io.writers import (
    GFF3_HEADER,
    SPANS_TSV_HEADER,
    gff3_lines,
    sequence_region,
    span_tsv_lines,
    tsv_line,
)
from esm_tcav.localize.detect import smooth
from esm_tcav.localize.spans import scores_to_spans

log = logging.getLogger("esm_tcav.localize.scan")

CHECKPOINT = "checkpoint.json"
SUMMARY = "summary.json"
FILES = ("scan.gff3", "scan.tsv", "proteins.tsv")
CHECKPOINT_FORMAT = "esm-tcav-scan/1"
LOG_NAME = "scan.log"


def file_identity(path: Path) -> dict:
    """Cheap identity of an input file for resume checks: size and hash of its two ends."""
    size = path.stat().st_size
    h = hashlib.sha256()
    with path.open("rb") as fh:
        h.update(fh.read(1 << 20))
        if size > 2 << 20:
            fh.seek(size - (1 << 20))
        h.update(fh.read(1 << 20))
    return {"path": str(path.resolve()), "size": size, "ends_sha256": h.hexdigest()}


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int] | None:
    if shard is None or isinstance(shard, tuple):
        if shard is not None and not 0 <= shard[0] < shard[1]:
            raise ConfigError(f"shard {shard}: expected 0 <= I < N")
        return shard
    try:
        i, n = (int(x) for x in str(shard).split("/"))
        if not 0 <= i < n:
            raise ValueError
    except ValueError:
        raise ConfigError(f"--shard {shard!r}: expected I/N with 0 <= I < N, e.g. 0/4") from None
    return i, n


def shard_range(n_records: int, shard: tuple[int, int] | None) -> tuple[int, int]:
    """Contiguous block of records of shard i of n (concatenating blocks in order = the file)."""
    if shard is None:
        return 0, n_records
    i, n = shard
    return i * n_records // n, (i + 1) * n_records // n


# ---------------------------------------------------------------------- spans and lines


def weak_concepts(lib: Library) -> list:
    """The library's concepts graded weak or "not a concept"."""
    return [c for c in lib.concepts if c.grade in WEAK]


def protein_lines(prot: Protein, scores: np.ndarray, lib: Library) -> tuple[str, str, str, list]:
    """GFF3, spans TSV and proteins TSV lines of one protein, and per-concept span counts."""
    gff, tsv, counts = [], [], []
    cells: list[object] = [prot.id, len(prot.sequence)]
    for k, c in enumerate(lib.concepts):
        s = smooth(scores[:, k], c.smoothing_window)
        spans = scores_to_spans(s, c.threshold, c.min_span_length, c.merge_gap)
        rows = [(prot.id, sp) for sp in spans]
        args = (rows, c.name, c.layer, c.threshold, c.threshold_method)
        prob = c.probability if c.calibration is not None else None
        gff.extend(gff3_lines(*args, "one-pass", header=False, grade=c.grade, probability=prob))
        tsv.extend(span_tsv_lines(*args, header=False, grade=c.grade))
        # mean of the raw residue scores = the CAV on the mean-pooled protein (it is linear):
        # the protein's evidence, and the score of a protein-level concept; sort by it to rank
        cells += [len(spans), float(s.max()), float(np.mean(scores[:, k], dtype=np.float64))]
        counts.append((len(spans), sum(sp.length for sp in spans)))
    if gff:  # one pragma per protein with features, before all its concepts' features
        gff.insert(0, sequence_region(prot.id, len(prot.sequence)))
    return "".join(gff), "".join(tsv), tsv_line(cells), counts


def is_protein_level(concept) -> bool:
    """A concept trained on mean-pooled proteins ("carries a signal peptide")."""
    return (getattr(concept, "metrics", None) or {}).get("granularity") == "protein"


def _headers(lib: Library) -> dict[str, str]:
    names = ", ".join(f"{c.name} (layer {c.layer}, v{c.version})" for c in lib.concepts)
    gff = (
        f"{GFF3_HEADER}# esm-tcav scan; model {lib.model.get('name')} fingerprint "
        f"{lib.model.get('fingerprint')}; concepts: {names}\n"
    )
    prot = tsv_line(
        ["protein_id", "length"]
        + [
            f"{c.name}:{what}"
            for c in lib.concepts
            for what in ("spans", "max_score", "mean_score")
        ]
    )
    return {"scan.gff3": gff, "scan.tsv": SPANS_TSV_HEADER, "proteins.tsv": prot}


# ---------------------------------------------------------------------- outputs + checkpoint


class _Outputs:
    """Append-only output files whose committed lengths live in the checkpoint."""

    def __init__(self, folder: Path, headers: dict[str, str], offsets: dict[str, int] | None):
        self.folder = folder
        self.handles: dict[str, IO[bytes]] = {}
        for name in FILES:
            path = folder / name
            # Appended chunk by chunk and fsynced by `sync` (not written atomically): the
            # checkpoint records the lengths they are valid up to, and a resume truncates there.
            if offsets is None:
                fh = path.open("wb")
                fh.write(headers[name].encode())
            else:
                if not path.is_file() or path.stat().st_size < offsets[name]:
                    raise ArtifactError(
                        f"{path}: shorter than the checkpoint says; the scan "
                        "folder was changed; delete it and scan again"
                    )
                os.truncate(path, offsets[name])
                fh = path.open("ab")
            self.handles[name] = fh

    def append(self, chunks: dict[str, list[str]]) -> None:
        for name, parts in chunks.items():
            self.handles[name].write("".join(parts).encode())

    def sync(self) -> dict[str, int]:
        """Flush and fsync every file; returns their lengths (what the checkpoint records)."""
        sizes = {}
        for name, fh in self.handles.items():
            fh.flush()
            os.fsync(fh.fileno())
            sizes[name] = fh.tell()
        return sizes

    def close(self) -> None:
        for fh in self.handles.values():
            fh.close()


def _write_checkpoint(folder: Path, state: dict) -> None:
    """The checkpoint with a seal: the sha256 of everything in it (settings, offsets, counts)."""
    state.pop("sha256", None)
    atomic_write_json(folder / CHECKPOINT, {**state, "sha256": content_hash(state)})


def read_checkpoint(path: Path) -> dict:
    """A checkpoint whose seal verifies; ArtifactError names the file otherwise."""
    state = read_json(path)
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ArtifactError(f"{path}: not an esm-tcav scan checkpoint; use another --out")
    seal = state.pop("sha256", None)
    if seal != content_hash(state):
        raise ArtifactError(
            f"{path}: its sha256 does not match its content (the checkpoint was edited, or "
            "written by an older esm-tcav); delete the folder and scan again"
        )
    return state


def load_scan_model(
    lib: Library,
    device: str = "cpu",
    dtype: str = "auto",
    model_path: str | Path | None = None,
    registry_file: str | Path | None = None,
):
    """The library's model in `dtype`, checked against the library's fingerprint (which
    identifies the checkpoint as stored, whatever dtype it is loaded in). Without
    `model_path`/`registry_file`, those recorded in the library (if any) are used."""
    from esm_tcav.models.loading import load_model

    model_path = model_path or lib.model.get("path")
    registry_file = registry_file or lib.model.get("registry_file")
    loaded = load_model(
        lib.model.get("name"), model_path, device=device, dtype=dtype, registry_file=registry_file
    )
    lib.check_model(loaded)
    return loaded


# ---------------------------------------------------------------------- the verb


def run_scan(
    fasta: str | Path,
    library: str | Path,
    out: str | Path,
    shard: str | tuple[int, int] | None = None,
    device: str = _D.device,
    toks_per_batch: int = _D.toks_per_batch,
    dtype: str = _D.dtype,
    model_path: str | Path | None = _D.model_path,
    registry_file: str | Path | None = _D.registry_file,
    engine: str = _D.engine,
    chunk_proteins: int = _D.chunk_proteins,
    concepts: Sequence[str] | None = None,
    loaded=None,
    progress: bool = True,
    store: str | Path | None = None,
    include_weak: bool = False,
) -> dict:
    """Scan a FASTA with every concept of a library; resumable, shardable, streaming.

    Returns the summary (also written to `summary.json`). A finished scan folder is not
    rescanned; an unfinished one is resumed; one holding a scan of other inputs is refused.
    The settings (device ... chunk_proteins) are checked against `config.ScanSettings`.
    Concepts graded weak or "not a concept" (concepts/grade.py) are left out, with a warning,
    unless `include_weak` or they are named in `concepts`.
    """
    fasta, out = Path(fasta), Path(out)
    shard = parse_shard(shard)
    capture = start_capture()  # the clean-ups validation notes go to the scan's log file
    try:
        # 1. everything that can fail on bad input or settings, before anything is written
        ScanSettings.of(
            device=device,
            toks_per_batch=toks_per_batch,
            dtype=dtype,
            model_path=model_path,
            registry_file=registry_file,
            engine=engine,
            chunk_proteins=chunk_proteins,
        )
        lib = load_library(library, concepts)
        if not lib.concepts:
            raise ConfigError(f"{library}: the library has no concepts")
        left_out = [] if include_weak or concepts is not None else weak_concepts(lib)
        if left_out:
            log.warning(
                "scan: leaving out weak concepts %s (pass --include-weak to scan them anyway)",
                ", ".join(f"{c.name} ({c.grade})" for c in left_out),
            )
            lib.concepts = [c for c in lib.concepts if c.grade not in WEAK]
            if not lib.concepts:
                raise ConfigError(
                    f"{library}: every concept is graded weak; pass --include-weak to scan them"
                )
        folder = out / "shards" / f"{shard[0]}-of-{shard[1]}" if shard else out
        check_output_dir(folder, "--out")
        if loaded is None:
            loaded = load_scan_model(lib, device, dtype, model_path, registry_file)
        else:
            lib.check_model(loaded)
        n_records, _ = validate_fasta(fasta, loaded.check_sequence)  # model's alphabet too
        lo, hi = shard_range(n_records, shard)
        identity = {
            "fasta": file_identity(fasta),
            "library": str(Path(library).resolve()),
            "library_sha256": lib.index_sha256,
            "concepts": lib.names,
            "model_fingerprint": loaded.fingerprint,
            "dtype": str(loaded.dtype).removeprefix("torch."),
            "shard": list(shard) if shard else None,
            "records": [lo, hi],
            "chunk_proteins": chunk_proteins,
        }
        emb_store = None
        if store is not None:
            from esm_tcav.engine.store import EmbeddingStore

            emb_store = EmbeddingStore(store, loaded.fingerprint)
            identity["store"] = str(Path(store).resolve())
        # 2. one writer per folder, then the log file, then the outputs
        with folder_lock(folder, what="esm-tcav scan"):
            handler = log_to_file(folder / LOG_NAME, capture)
            try:
                return _scan_into(
                    folder,
                    identity,
                    lib,
                    loaded,
                    fasta,
                    library,
                    shard,
                    n_records,
                    lo,
                    hi,
                    toks_per_batch,
                    engine,
                    chunk_proteins,
                    progress,
                    emb_store,
                )
            finally:
                detach(handler)
    finally:
        capture.close()


def _scan_into(
    folder: Path,
    identity: dict,
    lib: Library,
    loaded,
    fasta: Path,
    library,
    shard,
    n_records: int,
    lo: int,
    hi: int,
    toks_per_batch: int,
    engine: str,
    chunk_proteins: int,
    progress: bool,
    emb_store=None,
) -> dict:
    """The locked part of `run_scan`: resume or start, scan chunk by chunk, checkpoint."""
    state = _resume_state(folder, identity)
    if state is not None and state.get("complete"):
        log.info("scan in %s is already complete; nothing to do", folder)
        summary = read_json(folder / SUMMARY)
        summary["already_complete"] = True
        return summary
    if state is None:
        state = {
            "format": CHECKPOINT_FORMAT,
            "identity": identity,
            "chunks_done": 0,
            "proteins_done": 0,
            "residues_done": 0,
            "seconds": 0.0,
            "complete": False,
            "counts": {
                c.name: {"spans": 0, "proteins_with_spans": 0, "residues_in_spans": 0}
                for c in lib.concepts
            },
            "offsets": None,
        }
    resumed_from = state["chunks_done"]
    fresh = state["offsets"] is None

    proj = Projection.from_cavs([c.cav for c in lib.concepts], loaded.spec.hidden_size)
    scan_engine = ForwardEngine(
        loaded, projection=proj, toks_per_batch=toks_per_batch, mode=engine, log_dir=folder
    )
    start_record = lo + state["chunks_done"] * chunk_proteins
    todo = hi - start_record
    t0 = time.perf_counter()
    done_now = residues_now = from_store = 0
    pending = 0  # bytes of the chunk being written (to say how much space a full disk lacks)
    from contextlib import nullcontext

    from esm_tcav.ui import progress_bar

    outputs = None
    bar = progress_bar(todo, "scan") if progress else nullcontext(None)
    try:
        outputs = _Outputs(folder, _headers(lib), state["offsets"])
        if state["offsets"] is None:
            state["offsets"] = outputs.sync()
            _write_checkpoint(folder, state)
        with bar as advance:
            proteins = iter_fasta(fasta, start_record, hi, check=False)  # validated above
            while chunk := list(islice(proteins, chunk_proteins)):
                scores: list[np.ndarray | None] = [None] * len(chunk)
                todo = list(range(len(chunk)))
                if emb_store is not None:
                    todo = _score_stored(emb_store, proj, chunk, scores)
                    from_store += len(chunk) - len(todo)
                    if advance and len(todo) < len(chunk):
                        done = [p for p, sc in zip(chunk, scores, strict=True) if sc is not None]
                        advance(len(done), sum(len(p.sequence) for p in done))
                for j, s in scan_engine.score([chunk[i] for i in todo]) if todo else ():
                    scores[todo[j]] = s
                    if advance:
                        advance(1, len(chunk[todo[j]].sequence))
                parts: dict[str, list[str]] = {name: [] for name in FILES}
                for prot, s in zip(chunk, scores, strict=True):
                    gff, tsv, prow, counts = protein_lines(prot, s, lib)
                    parts["scan.gff3"].append(gff)
                    parts["scan.tsv"].append(tsv)
                    parts["proteins.tsv"].append(prow)
                    for c, (n_spans, n_res) in zip(lib.concepts, counts, strict=True):
                        cc = state["counts"][c.name]
                        cc["spans"] += n_spans
                        cc["proteins_with_spans"] += int(n_spans > 0)
                        cc["residues_in_spans"] += n_res
                pending = sum(len("".join(v).encode()) for v in parts.values())
                outputs.append(parts)
                # outputs first (fsynced), then the checkpoint that vouches for them
                state["offsets"] = outputs.sync()
                state["chunks_done"] += 1
                state["proteins_done"] += len(chunk)
                n_res = sum(len(p.sequence) for p in chunk)
                state["residues_done"] += n_res
                done_now += len(chunk)
                residues_now += n_res
                state["seconds"] = state.get("seconds", 0.0) + (time.perf_counter() - t0)
                t0 = time.perf_counter()
                _write_checkpoint(folder, state)
                release_heap()
    except OSError as exc:
        raise _disk_full(exc, folder, state, pending, chunk_proteins, lo, hi) from None
    finally:
        if outputs is not None:
            outputs.close()
        if fresh and not (folder / CHECKPOINT).is_file():
            for name in FILES:  # nothing vouches for them: leave no half-started scan
                (folder / name).unlink(missing_ok=True)
    elapsed_now = state["seconds"]
    summary = _summary(
        lib, state, fasta, library, folder, shard, loaded, scan_engine, n_records, lo, hi
    )
    summary["this_run"] = {
        "proteins": done_now,
        "residues": residues_now,
        "resumed_from_chunk": resumed_from,
    }
    if emb_store is not None:
        summary["this_run"]["scored_from_store"] = from_store
    atomic_write_json(folder / SUMMARY, summary)
    state["complete"] = True
    state["seconds"] = elapsed_now
    _write_checkpoint(folder, state)
    return summary


def _score_stored(store, proj: Projection, chunk: list[Protein], scores: list) -> list[int]:
    """Score the proteins of `chunk` the store holds (filling `scores`); the others' indices."""
    import torch

    todo = []
    for i, prot in enumerate(chunk):
        if all(store.has(prot.seq_hash, layer, residues=True) for layer in proj.layers):
            states = {
                layer: torch.tensor(store.residues(prot.seq_hash, layer)) for layer in proj.layers
            }
            scores[i] = proj(states).numpy()
        else:
            todo.append(i)
    return todo


def _disk_full(
    exc: OSError, folder: Path, state: dict, pending: int, chunk: int, lo: int, hi: int
) -> Exception:
    """One line for a failed write: where, why, and (disk full) about how much more is needed.

    The checkpoint still vouches for what was finished, so a rerun resumes after the last
    complete chunk."""
    done = state.get("proteins_done", 0)
    remaining = max(hi - lo - done, 0)
    written = sum((state.get("offsets") or {}).values())
    if done:
        needed = int(written / done * remaining)
    else:
        needed = int(pending / max(chunk, 1) * remaining) if pending else None
    return disk_error(exc, folder, needed)


def _resume_state(folder: Path, identity: dict) -> dict | None:
    path = folder / CHECKPOINT
    if not path.is_file():
        return None
    state = read_checkpoint(path)
    old = state.get("identity", {})
    for key, value in identity.items():
        if old.get(key) != value:
            raise ArtifactError(
                f"{folder}: holds a scan with other inputs ({key} differs: {old.get(key)!r} vs "
                f"{value!r}); use another --out folder or delete this one to start over"
            )
    if state.get("offsets") is None:
        return None
    log.info(
        "resuming the scan in %s after %d chunks (%d proteins)",
        folder,
        state["chunks_done"],
        state["proteins_done"],
    )
    return state


def _summary(
    lib: Library,
    state: dict,
    fasta: Path,
    library,
    folder: Path,
    shard,
    loaded,
    engine: ForwardEngine,
    n_records: int,
    lo: int,
    hi: int,
) -> dict:
    secs = state["seconds"]
    st = engine.stats
    return {
        "fasta": str(fasta),
        "library": str(library),
        "output": str(folder),
        "shard": f"{shard[0]}/{shard[1]}" if shard else None,
        "records_in_file": n_records,
        "records": [lo, hi],
        "model": lib.model.get("name"),
        "fingerprint": loaded.fingerprint,
        "device": describe_device(loaded.device),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "engine": engine.mode,
        "proteins": state["proteins_done"],
        "residues": state["residues_done"],
        "seconds": round(secs, 3),
        "proteins_per_second": round(state["proteins_done"] / secs, 2) if secs > 0 else None,
        "residues_per_second": round(state["residues_done"] / secs, 1) if secs > 0 else None,
        "padding_fraction_last_run": round(1 - st["tokens"] / st["token_slots"], 4)
        if st["token_slots"]
        else None,
        "concepts": {
            c.name: {
                "layer": c.layer,
                "version": c.version,
                "threshold": c.threshold,
                "threshold_method": c.threshold_method,
                **state["counts"][c.name],
            }
            for c in lib.concepts
        },
        "files": list(FILES) + [SUMMARY],
    }


# ---------------------------------------------------------------------- shards


def merge_shards(out: str | Path, n: int) -> dict:
    """Concatenate finished shards 0..n-1 (in record order) into `out`'s scan files."""
    out = Path(out)
    folders = [out / "shards" / f"{i}-of-{n}" for i in range(n)]
    states = []
    for f in folders:
        path = f / CHECKPOINT
        state = read_checkpoint(path) if path.is_file() else {}
        if not state.get("complete"):
            raise ArtifactError(
                f"{f}: shard not finished; rerun `esm-tcav scan ... --shard "
                f"{folders.index(f)}/{n}` (it resumes) before merging"
            )
        states.append(state)
    ids = {
        json.dumps(
            {k: v for k, v in s["identity"].items() if k not in ("shard", "records")},
            sort_keys=True,
        )
        for s in states
    }
    if len(ids) != 1:
        raise ArtifactError(
            f"{out}/shards: the shards were scanned with different inputs; "
            "rescan them with the same FASTA and library"
        )
    with folder_lock(out, what="esm-tcav scan --merge"):
        return _merge_into(out, n, folders)


def _merge_into(out: Path, n: int, folders: list[Path]) -> dict:
    for name in FILES:
        atomic_write_with(out / name, lambda tmp, name=name: _concatenate(folders, name, tmp))
    summaries = [read_json(f / SUMMARY) for f in folders]
    merged = dict(summaries[0])
    merged.update(
        {
            "output": str(out),
            "shard": None,
            "merged_shards": n,
            "records": [summaries[0]["records"][0], summaries[-1]["records"][1]],
            "proteins": sum(s["proteins"] for s in summaries),
            "residues": sum(s["residues"] for s in summaries),
            "seconds": round(sum(s["seconds"] for s in summaries), 3),
        }
    )
    merged.pop("this_run", None)
    merged["proteins_per_second"] = merged["residues_per_second"] = None  # shards ran in parallel
    for name in merged["concepts"]:
        for key in ("spans", "proteins_with_spans", "residues_in_spans"):
            merged["concepts"][name][key] = sum(s["concepts"][name][key] for s in summaries)
    atomic_write_json(out / SUMMARY, merged)
    return merged


def _concatenate(folders: list[Path], name: str, dst_path: Path) -> None:
    """The shards' `name` files one after the other, with the header of the first only."""
    with dst_path.open("wb") as dst:
        for i, f in enumerate(folders):
            with (f / name).open("rb") as src:
                if i > 0:
                    _skip_header(src, name)
                shutil.copyfileobj(src, dst, 1 << 20)


def _skip_header(fh: IO[bytes], name: str) -> None:
    """Advance past the header lines (GFF3 '#' lines up to the first '##sequence-region' or
    feature, the TSV column line)."""
    if name != "scan.gff3":
        fh.readline()
        return
    while True:
        pos = fh.tell()
        line = fh.readline()
        if not line.startswith(b"#") or line.startswith(b"##sequence-region"):
            fh.seek(pos)
            return


def slurm_commands(
    fasta: str | Path,
    library: str | Path,
    out: str | Path,
    shards: int,
    exe: str = "esm-tcav",
    extra: str = "",
) -> dict[str, str]:
    """The array-task and merge commands of a sharded scan (for `esm-tcav slurm`)."""
    q = shlex.quote
    base = f"{exe} scan {q(str(fasta))} --library {q(str(library))} --out {q(str(out))}"
    base += f" {extra}" if extra else ""
    return {
        "array": f'{base} --shard "${{SLURM_ARRAY_TASK_ID}}/{shards}"',
        "merge": f"{base} --merge {shards}",
    }
