"""Any Hugging Face encoder with one token per residue (ProtBERT and its kin), via `AutoModel`.

The model runs whole through the library (`output_hidden_states=True`): layer 0 is the
embedding output and layer i the library's hidden state i, so layer `num_layers` is the encoder
output of a BERT-like model. Its tokenizer must give one token per residue; that is proven on
load against the tokenizer's own call (`hf_tokens.residue_alphabet`), and a BPE-style tokenizer
is refused with one message. Padded batches only (positions are absolute: no packed forward);
no head, so no TCAV target (the run says so and skips TCAV).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer

from esm_tcav.errors import ModelMismatchError
from esm_tcav.models.base import ProteinLM
from esm_tcav.models.hf_tokens import residue_alphabet
from esm_tcav.models.registry import ModelSpec
from esm_tcav.models.tokens import Alphabet
from esm_tcav.models.weights import check_shape, fingerprint, freeze, hf_source, spec_for_shape

log = logging.getLogger("esm_tcav.models.hf_encoder")


class HfEncoder(ProteinLM):
    """A Hugging Face encoder, run by the library, states taken from `hidden_states`."""

    def __init__(self, model, spec: ModelSpec, alphabet: Alphabet, digest: str, source: str):
        super().__init__(spec, alphabet, model, digest, source)

    def forward(
        self, tokens: torch.Tensor, mask: torch.Tensor, layers: Sequence[int]
    ) -> dict[int, torch.Tensor]:
        states = self.module(
            input_ids=tokens, attention_mask=mask, output_hidden_states=True
        ).hidden_states
        return {layer: states[layer] for layer in layers}

    def forward_from(self, layer: int, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise ModelMismatchError(
            f"model {self.name!r} ({self.source}) is run whole by its library: it has no head "
            "and no forward from a middle layer, so TCAV has no target"
        )


def _size(config, *names: str) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def shape_of(config) -> tuple[int | None, int | None, int | None]:
    """(hidden size, layers, heads) under the names encoder configs use."""
    return (
        _size(config, "hidden_size", "d_model", "dim"),
        _size(config, "num_hidden_layers", "num_layers", "n_layers"),
        _size(config, "num_attention_heads", "num_heads", "n_heads"),
    )


def _read_model(source, local: bool):
    """The bare encoder; without the pooler where the class has one (BERT-like checkpoints
    often lack its weights, which would be initialized at random: unused, but noisy)."""
    kw = {"local_files_only": local, "dtype": torch.float32}
    try:
        return AutoModel.from_pretrained(source, add_pooling_layer=False, **kw)
    except TypeError:  # the class takes no pooler switch
        return AutoModel.from_pretrained(source, **kw)


def load(
    spec: ModelSpec | None,
    path: Path | None = None,
    *,
    allow_download: bool = False,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> HfEncoder:
    """The backend entry point: a Hugging Face folder with its tokenizer, or the registry's hub
    name when downloads are allowed."""
    source, local = hf_source(spec, path, allow_download)
    where = str(source)
    config = AutoConfig.from_pretrained(source, local_files_only=local)
    if getattr(config, "is_encoder_decoder", False):
        raise ModelMismatchError(
            f"{where}: an encoder-decoder model ({config.model_type}); use backend t5 for T5 "
            "models (ProtT5, Ankh)"
        )
    hidden, layers, heads = shape_of(config)
    spec = spec or spec_for_shape("hf_encoder", hidden, layers, where)
    checks = [
        ("hidden size", hidden, spec.hidden_size),
        ("number of layers", layers, spec.num_layers),
        ("number of attention heads", heads, spec.num_heads or heads),
    ]
    check_shape(checks, spec, where)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local)
    except Exception as exc:
        raise ModelMismatchError(
            f"{where}: cannot load the tokenizer ({str(exc).splitlines()[0]}); the folder needs "
            "the model's tokenizer files"
        ) from exc
    alphabet = residue_alphabet(tokenizer, spec.name, where)
    model = _read_model(source, local)
    digest = fingerprint(
        ["hf_encoder", config.model_type, spec.hidden_size, spec.num_layers, list(alphabet.vocab)],
        model.state_dict(),
        ("word_embeddings.weight", "LayerNorm.weight"),
    )
    freeze(model, device, dtype)
    log.info("loaded %s (%s) from %s (fingerprint %s)", spec.name, config.model_type, where, digest)
    return HfEncoder(model, spec, alphabet, digest, where)
