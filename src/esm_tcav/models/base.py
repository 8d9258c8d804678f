"""`ProteinLM`: what the rest of the package needs from a protein language model.

A backend (one module, named by a registry entry's `backend`) subclasses `ProteinLM` and exposes
a `load(spec, path, allow_download, device, dtype)` function returning one. The engine, TCAV and
the stages only use this interface, so they never see the model library or its vocabulary.

Layer indices: 0 is the embedding output, i the output of block i, `num_layers` the final
states (after any final norm). Tensors are [B, T, H] for padded batches, [N, H] when packed.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol

import torch
from torch import nn

from esm_tcav.errors import ConfigError, InputError, ModelMismatchError
from esm_tcav.models.registry import ModelSpec
from esm_tcav.models.tokens import Alphabet

HEAD_KINDS = ("sequence_classification", "masked_lm")

log = logging.getLogger("esm_tcav.models")


class PackedForward(Protocol):
    """A backend's forward on packed rows (`ProteinLM.packed_encoder`): the tokens of many
    proteins end to end in one row [N], attention within each protein. `cu` [P+1] int32 on the
    device (and `cu_host`, the same list on the host) bound the proteins; `positions` [N]
    restart at 0 at every protein; `max_len` is the longest protein's token count."""

    def __call__(
        self,
        tokens: torch.Tensor,
        cu: torch.Tensor,
        cu_host: list[int],
        positions: torch.Tensor,
        max_len: int,
        layers: Sequence[int],
    ) -> dict[int, torch.Tensor]:
        """States [N, H] at `layers`; stops after the deepest."""
        ...

    def between(
        self,
        start: int,
        stop: int,
        hidden: torch.Tensor,
        cu: torch.Tensor,
        cu_host: list[int],
        positions: torch.Tensor,
        max_len: int,
        first_only: bool = False,
    ) -> torch.Tensor:
        """States [N, H] at `stop` from the states at `start` (differentiable; start <= stop):
        gradient TCAV's pass. `first_only`: the states of each protein's first token only
        [P, H] (a head that reads token 0 needs no more of the last layer)."""
        ...


class ProteinLM(ABC):
    """A loaded model: registry entry, tokenizer, weights, fingerprint, optional head.

    Subclasses implement `forward` and `forward_from`; the rest has working defaults. `module`
    holds every weight (encoder and head) so that `device`, `dtype` and `to` work for any backend.
    """

    #: "sequence_classification" (`head_logits` -> [B, C]), "masked_lm" ([B, T, V] over the
    #: alphabet's ids) or None (no head: TCAV has no target)
    head_kind: str | None = None

    def __init__(
        self, spec: ModelSpec, alphabet: Alphabet, module: nn.Module, fingerprint: str, source: str
    ):
        self.spec = spec
        self.alphabet = alphabet
        self.module = module
        self.fingerprint = fingerprint
        self.source = source

    # ------------------------------------------------------------------ shape and placement
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def hidden_size(self) -> int:
        return self.spec.hidden_size

    @property
    def num_layers(self) -> int:
        return self.spec.num_layers

    @property
    def max_residues(self) -> int:
        """Residues that fit in one forward pass next to the special tokens."""
        return self.spec.max_residues

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.module.parameters()).dtype

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """Move or cast every weight (encoder and head); returns self."""
        self.module.to(device=device, dtype=dtype)
        return self

    # ------------------------------------------------------------------ residues and tokens
    @property
    def residue_offset(self) -> int:
        """Token index of residue 1 in the model's own layout (the indexing guard checks it)."""
        return 1 if self.alphabet.prepend_bos and self.alphabet.bos is not None else 0

    @property
    def residues(self) -> frozenset[str]:
        """Residue letters the model has a token for (or reads as another token's)."""
        own = {t for t in self.alphabet.vocab if len(t) == 1 and t.isalpha()}
        return frozenset(own | {letter for letter, _ in self.alphabet.aliases})

    def check_sequence(self, seq: str, where: str) -> None:
        """A clear error for a residue the model has no token for (rather than a silent <unk>);
        a residue read as another (an alphabet alias, e.g. ProtT5's U as X) is logged."""
        bad = set(seq) - self.residues
        if bad:
            raise InputError(
                f"{where}: character {sorted(bad)[0]!r} is not in the {self.alphabet.name} "
                "alphabet; clean the sequence or use a model that reads it"
            )
        read_as = [f"{a} ({seq.count(a)}) as {b}" for a, b in self.alphabet.aliases if a in seq]
        if read_as:
            log.info("%s: %s reads %s", where, self.name, ", ".join(read_as))

    # ------------------------------------------------------------------ forward passes
    @abstractmethod
    def forward(
        self, tokens: torch.Tensor, mask: torch.Tensor, layers: Sequence[int]
    ) -> dict[int, torch.Tensor]:
        """Hidden states [B, T, H] at `layers` of a padded batch; stops after the deepest."""

    @abstractmethod
    def forward_from(self, layer: int, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Final states [B, T, H], continuing from the states at `layer` (differentiable)."""

    def forward_between(
        self, start: int, stop: int, hidden: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """States at `stop` from the states at `start` (differentiable; start <= stop).

        Lets gradient TCAV take the derivatives at every tapped layer from ONE forward and
        backward pass. Backends that do not override it can only run to the end, and TCAV
        then takes one pass per layer.
        """
        if stop == start:
            return hidden
        if stop == self.num_layers:
            return self.forward_from(start, hidden, mask)
        raise NotImplementedError(f"{type(self).__name__} runs only to the final layer")

    @property
    def supports_packed(self) -> bool:
        """True when `packed_encoder` gives a forward on packed rows (no padding)."""
        return False

    def packed_encoder(self, attention: str = "auto", compile: bool = False) -> PackedForward:
        """The forward on packed rows: many proteins in one row, attention within each."""
        raise ConfigError(f"model {self.name!r} has no packed forward; use padded batches")

    # ------------------------------------------------------------------ heads (TCAV targets)
    @property
    def head_reads_first_token(self) -> bool:
        """True when `head_logits` reads the final state of token 0 alone (a classification
        head on BOS/<cls>): gradient TCAV then runs the last layer for that token only."""
        return False

    @property
    def num_classes(self) -> int | None:
        """Classes of a sequence-classification head, None otherwise."""
        return None

    def head_logits(self, final: torch.Tensor) -> torch.Tensor:
        """The head's output from final states [B, T, H] (see `head_kind` for the shape)."""
        raise ModelMismatchError(f"model {self.name!r} ({self.source}) has no head")
