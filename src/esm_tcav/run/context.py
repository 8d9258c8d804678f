"""What every stage of a run shares: the config, the model, the dataset, the store, the log."""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path

from esm_tcav.config import Config, save_snapshot
from esm_tcav.engine.embed import embed_into_store, open_store
from esm_tcav.io.sequences import Protein
from esm_tcav.models.base import ProteinLM
from esm_tcav.models.loading import load_model
from esm_tcav.run.dataset import Dataset, load_dataset, write_split

log = logging.getLogger("esm_tcav")


class RunContext:
    """Lazily loads what a stage needs, once; stages never load the model themselves."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.out: Path = cfg.out
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "logs").mkdir(exist_ok=True)
        save_snapshot(cfg, self.out / "config.snapshot.yaml")
        _log_to_file(self.out / "logs" / "esm-tcav.log")

    @cached_property
    def loaded(self) -> ProteinLM:
        m = self.cfg.model
        return load_model(
            m.name,
            m.path,
            allow_download=m.allow_download,
            device=m.device,
            dtype=m.dtype,
            registry_file=self.cfg.path(m.registry_file),
        )

    @cached_property
    def layers(self) -> list[int]:
        return self.loaded.spec.resolve_layers(self.cfg.model.layers)

    @cached_property
    def model_name(self) -> str:
        return self.loaded.spec.name

    @cached_property
    def dataset(self) -> Dataset:
        ds = load_dataset(self.cfg)
        write_split(ds, self.out / "split.json")
        return ds

    @cached_property
    def store(self):
        return open_store(self.cfg, self.loaded)

    def ensure_embeddings(self, proteins: list[Protein], progress=None, force: bool = False) -> int:
        """Embed the proteins the store lacks (all tapped layers); returns how many were done."""
        return embed_into_store(
            self.cfg, self.loaded, proteins, self.layers, self.store, progress=progress, force=force
        )


def _log_to_file(path: Path) -> None:
    root = logging.getLogger("esm_tcav")
    if any(
        isinstance(h, logging.FileHandler) and Path(h.baseFilename) == path.resolve()
        for h in root.handlers
    ):
        return
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
