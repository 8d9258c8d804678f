"""The `embed` stage: every protein's states at every tapped layer, into the store.

The forward pass itself is `engine.forward.ForwardEngine`; this module configures it from the
run config and writes what it yields into shards.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from esm_tcav.engine.context import StageContext
from esm_tcav.engine.forward import ForwardEngine
from esm_tcav.io.proteins import Protein
from esm_tcav.models.base import ProteinLM

log = logging.getLogger("esm_tcav.engine.embed")


# ---------------------------------------------------------------------- the `embed` stage


def open_store(cfg, loaded: ProteinLM):
    from esm_tcav.engine.store import EmbeddingStore

    return EmbeddingStore(cfg.out / "embeddings", loaded.fingerprint, cfg.embed.residue_dtype)


def make_engine(cfg, loaded: ProteinLM, layers: list[int]) -> ForwardEngine:
    """The engine bringing back the states at `layers`, set up from the `embed` section."""
    return ForwardEngine(
        loaded,
        layers,
        toks_per_batch=cfg.embed.toks_per_batch,
        window=cfg.embed.window,
        tile_overlap=cfg.embed.tile_overlap,
        log_dir=cfg.out / "logs",
    )


def embed_into_store(
    cfg,
    loaded: ProteinLM,
    proteins: list[Protein],
    layers: list[int],
    store,
    progress: Callable[[int, int], None] | None = None,
    force: bool = False,
) -> int:
    """Embed what the store lacks, writing a shard every `shard_proteins`; returns how many."""
    todo = proteins if force else store.missing(proteins, layers, cfg.embed.per_residue)
    if not todo:
        return 0
    engine = make_engine(cfg, loaded, layers)
    pending: list = []
    for prot, states in engine.iter_residue_states(todo, progress):
        pending.append(store.compact(prot, states, cfg.embed.per_residue))
        if len(pending) >= cfg.embed.shard_proteins:
            store.write_shard(pending, cfg.embed.per_residue)
            pending = []
    if pending:
        store.write_shard(pending, cfg.embed.per_residue)
    return len(todo)


def run_embed(ctx: StageContext, shard: tuple[int, int] | None = None, force: bool = False) -> dict:
    """The `embed` verb: every protein of the dataset at every tapped layer, into the store.

    `shard=(i, n)` embeds only proteins i, i+n, i+2n, … (one SLURM array task).
    """
    from esm_tcav.ui import progress_bar

    proteins = ctx.dataset.proteins
    if shard is not None:
        i, n = shard
        proteins = proteins[i::n]
    todo = proteins if force else ctx.store.missing(proteins, ctx.layers, ctx.cfg.embed.per_residue)
    with progress_bar(len(todo), "embed") as advance:
        done = ctx.ensure_embeddings(todo, progress=advance, force=force)
    summary = {
        "model": ctx.model_name,
        "fingerprint": ctx.loaded.fingerprint,
        "layers": ctx.layers,
        "proteins": len(proteins),
        "embedded_now": done,
        "reused": len(proteins) - done,
        "indexing_corrections": _corrections_logged(ctx),
        "store": str(ctx.store.root),
    }
    log.info("embed summary: %s", summary)
    return summary


def _corrections_logged(ctx: StageContext) -> int:
    path = ctx.out / "logs" / "indexing_corrections.jsonl"
    return sum(1 for _ in path.open()) if path.exists() else 0
