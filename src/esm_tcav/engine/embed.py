"""The `embed` stage: every protein's states at every tapped layer, into the store.

The forward pass itself is `engine.forward.ForwardEngine`; this module configures it from the
run config and writes what it yields into shards of at most `embed.shard_residues` residues, in
the store of `store.path` (shared by any number of runs) or of the run's own folder.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from esm_tcav.engine.context import StageContext
from esm_tcav.engine.forward import ForwardEngine
from esm_tcav.engine.store import Keep, kept_rows
from esm_tcav.io.proteins import Protein
from esm_tcav.models.base import ProteinLM

log = logging.getLogger("esm_tcav.engine.embed")


# ---------------------------------------------------------------------- the `embed` stage


CLAIM_POLL_S = 2.0  # how often a writer looks whether proteins claimed by others have arrived
_warned: list[bool] = []  # the shard_proteins deprecation is said once per process


def open_store(cfg, loaded: ProteinLM):
    """The store of `store.path` (shared) or of the run's own `embeddings/` folder."""
    from esm_tcav.engine.store import EmbeddingStore

    return EmbeddingStore(cfg.store_dir, loaded.fingerprint, cfg.embed.residue_dtype)


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
    keep: Keep | None = None,
) -> int:
    """Embed what the store lacks, one shard per `embed.shard_residues`; returns how many.

    `keep`: which residue states to store (`engine.store.Keep`); None: `embed.per_residue`.

    Proteins go longest first in shards of at most `shard_residues` residues (a single longer
    protein makes a shard of its own), so a kill loses at most the shard being filled. Each
    shard's proteins are claimed first: proteins another live writer claimed are left to it and
    waited for, so runs sharing a store embed every sequence once. `force` re-embeds.
    """
    keep = cfg.embed.per_residue if keep is None else keep
    pending = _unique(proteins) if force else store.missing(proteins, layers, keep)
    if not pending:
        return 0
    pending.sort(key=lambda p: -len(p.sequence))
    budget, cap = cfg.embed.shard_residues, cfg.embed.shard_proteins
    if cap is not None and not _warned:
        _warned.append(True)
        log.warning(
            "embed.shard_proteins is deprecated: shards are sized by embed.shard_residues "
            "(%d residues); shard_proteins=%d is still honoured as a cap on proteins per shard",
            budget,
            cap,
        )
    store.clean_stale_temporaries()
    engine = make_engine(cfg, loaded, layers)
    done = 0
    while pending:
        mine = store.claim(pending, budget, max_proteins=cap)
        if not mine:  # every remaining protein is being embedded by another writer
            time.sleep(CLAIM_POLL_S)
        else:
            try:
                store.refresh()  # another writer may have stored some since we looked
                todo = mine if force else store.missing(mine, layers, keep)
                if todo:
                    shard = [
                        store.compact(prot, states, kept_rows(keep, prot.seq_hash))
                        for prot, states in engine.iter_residue_states(todo, progress)
                    ]
                    store.write_shard(shard)
                    done += len(todo)
            finally:
                store.release(mine)
        store.refresh()
        taken = {p.seq_hash for p in mine}
        rest = [p for p in pending if p.seq_hash not in taken]
        pending = rest if force else store.missing(rest, layers, keep)
    return done


def _unique(proteins: list[Protein]) -> list[Protein]:
    return list({p.seq_hash: p for p in reversed(proteins)}.values())[::-1]


def run_embed(ctx: StageContext, shard: tuple[int, int] | None = None, force: bool = False) -> dict:
    """The `embed` verb: every protein of the dataset at every tapped layer, into the store.

    `shard=(i, n)` embeds only proteins i, i+n, i+2n, … (one SLURM array task).
    """
    from esm_tcav.ui import progress_bar

    proteins = ctx.dataset.proteins
    if shard is not None:
        i, n = shard
        proteins = proteins[i::n]
    todo = proteins if force else ctx.store.missing(proteins, ctx.layers, ctx.residue_keep)
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
        "residue_states": _kept_words(ctx.residue_keep),
    }
    log.info("embed summary: %s", summary)
    return summary


def _kept_words(keep: Keep) -> str:
    if isinstance(keep, bool):
        return "every residue" if keep else "none (pooled vectors only)"
    kept = sum(0 if isinstance(v, bool) else len(v) for v in keep.values())
    return f"the training sample ({kept:,} residues a layer; store.residue_states)"


def _corrections_logged(ctx: StageContext) -> int:
    path = ctx.out / "logs" / "indexing_corrections.jsonl"
    return sum(1 for _ in path.open()) if path.exists() else 0
