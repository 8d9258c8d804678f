"""The T5 encoder backend: ProtT5 (Rostlab) and Ankh (ElnaggarLab), via `T5EncoderModel`.

Residues as these models were trained on: one word per residue (ProtT5 writes "M K T ...",
Ankh passes `is_split_into_words=True`), `</s>` after the last residue and no BOS, so residue 1
is token 0. Letters the registry entry aliases are read as another residue (ProtT5's entry: U, Z,
O, B as X, its authors' preprocessing `re.sub(r"[UZOB]", "X", seq)`; Ankh reads them as they
are). The tokenizer in the model folder is checked on load to give exactly these ids
(`hf_tokens.residue_alphabet`).

T5 has a relative position bias over the whole row, so proteins cannot share a row: batches are
padded (length-sorted); `supports_packed` is False and the engine picks padded batches itself.
Layer i is block i's output; layer `num_layers` is after the final RMS norm (the encoder output).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoTokenizer, T5Config, T5EncoderModel
from transformers.masking_utils import create_bidirectional_mask

from esm_tcav.errors import ModelMismatchError
from esm_tcav.models.base import ProteinLM
from esm_tcav.models.hf_tokens import residue_alphabet
from esm_tcav.models.registry import ModelSpec
from esm_tcav.models.tokens import Alphabet
from esm_tcav.models.weights import check_shape, fingerprint, freeze, hf_source, spec_for_shape

log = logging.getLogger("esm_tcav.models.t5")


class T5Encoder(ProteinLM):
    """A T5 encoder run block by block (any prefix of it, and from any layer on)."""

    def __init__(
        self, model: T5EncoderModel, spec: ModelSpec, alphabet: Alphabet, digest: str, source: str
    ):
        super().__init__(spec, alphabet, model, digest, source)
        self.stack = model.encoder

    @property
    def max_residues(self) -> int:
        return self.spec.max_tokens - 1  # EOS only

    def _context(self, hidden: torch.Tensor, mask: torch.Tensor):
        """The attention mask and the relative position bias (block 0 owns the bias table and
        every block adds the same one, as `T5Stack` does)."""
        mask4d = create_bidirectional_mask(
            config=self.stack.config, inputs_embeds=hidden, attention_mask=mask
        )
        width = hidden.shape[1]
        attention = self.stack.block[0].layer[0].SelfAttention
        bias = attention.compute_bias(width, width, device=hidden.device)
        return mask4d, bias.to(hidden.dtype)

    def _blocks(self, hidden, mask, start: int, stop: int, layers=()):
        out = {}
        mask4d, bias = self._context(hidden, mask)
        for i in range(start + 1, stop + 1):
            hidden = self.stack.block[i - 1](hidden, mask4d, bias, None, None, None, cache=None)[0]
            if i == self.num_layers:
                hidden = self.stack.final_layer_norm(hidden)
            if i in layers:
                out[i] = hidden
        return hidden, out

    def forward(
        self, tokens: torch.Tensor, mask: torch.Tensor, layers: Sequence[int]
    ) -> dict[int, torch.Tensor]:
        hidden = self.stack.embed_tokens(tokens)
        _, out = self._blocks(hidden, mask, 0, max(layers), layers)
        if 0 in layers:
            out[0] = hidden
        return out

    def forward_from(self, layer: int, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        final, _ = self._blocks(hidden, mask, layer, self.num_layers)
        return final


def read_tokenizer(source: str | Path, local: bool, where: str):
    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=local)
    except Exception as exc:
        raise ModelMismatchError(
            f"{where}: cannot load the tokenizer ({str(exc).splitlines()[0]}); the folder needs "
            "the model's tokenizer files (tokenizer.json, or spiece.model with the sentencepiece "
            "package installed)"
        ) from exc


def load(
    spec: ModelSpec | None,
    path: Path | None = None,
    *,
    allow_download: bool = False,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> T5Encoder:
    """The backend entry point: a Hugging Face folder (config.json, weights, tokenizer), or the
    registry's hub name when downloads are allowed. Full T5 checkpoints load their encoder."""
    source, local = hf_source(spec, path, allow_download)
    where = str(source)
    config = T5Config.from_pretrained(source, local_files_only=local)
    if config.model_type != "t5":
        raise ModelMismatchError(f"{where}: model_type is {config.model_type!r}, expected 't5'")
    spec = spec or spec_for_shape("t5", config.d_model, config.num_layers, where)
    checks = [
        ("hidden size", config.d_model, spec.hidden_size),
        ("number of layers", config.num_layers, spec.num_layers),
        ("number of attention heads", config.num_heads, spec.num_heads or config.num_heads),
    ]
    check_shape(checks, spec, where)
    aliases = {str(k): str(v) for k, v in (spec.residue_aliases or {}).items()}
    alphabet = residue_alphabet(read_tokenizer(source, local, where), spec.name, where, aliases)
    model = T5EncoderModel.from_pretrained(source, local_files_only=local, dtype=torch.float32)
    digest = fingerprint(
        ["t5", spec.hidden_size, spec.num_layers, list(alphabet.vocab)],
        model.state_dict(),
        ("shared.weight", "final_layer_norm.weight", "relative_attention_bias.weight"),
    )
    freeze(model, device, dtype)
    log.info(
        "loaded %s from %s (fingerprint %s)%s",
        spec.name,
        where,
        digest,
        "; read as: " + ", ".join(f"{k}->{v}" for k, v in sorted(aliases.items()))
        if aliases
        else "",
    )
    return T5Encoder(model, spec, alphabet, digest, where)
