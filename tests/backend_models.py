"""Tiny random-weight models of every backend, saved in each model's real file format.

Used by tests/test_backends.py (as fixtures) and benchmarks/embed_throughput.py: ESM-C as
EvolutionaryScale ships it (`data/weights/esmc_*.pth`, a plain state dict), ProtT5 and Ankh as
`save_pretrained` folders of `T5EncoderModel` with their tokenizers (built offline from their
vocabularies), ProtBERT as a `BertModel` folder with a `BertTokenizer` from its vocab.txt.
"""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

TINY = {"hidden_size": 32, "num_layers": 3, "num_heads": 4}
PROTT5_LETTERS = "ALGVSREDTIPKFQNYMHWCXBOUZ"  # ProtT5's order after <pad> </s> <unk>
PROTBERT_VOCAB = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"LAGVESIKRDTPNQFYMHCWXUBZO")


def registry(folder: Path, name: str, backend: str, **extra) -> Path:
    """A user registry YAML with one tiny entry of `backend` (as users add their checkpoints)."""
    entry = {
        "backend": backend,
        **TINY,
        "default_taps": [1, 2, 3],
        "max_tokens": 1024,
        "description": f"tiny random {backend} test model",
        **extra,
    }
    path = Path(folder) / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"models": {name: entry}}))
    return path


#: per tiny model: its backend and registry extras (ProtT5 reads U, Z, O, B as X; Ankh does not)
KINDS = {
    "esmc": ("esmc", {}),
    "prott5": ("t5", {"residue_aliases": {"U": "X", "Z": "X", "O": "X", "B": "X"}}),
    "ankh": ("t5", {}),
    "protbert": ("hf_encoder", {}),
}


def tiny_registry(folder: Path, kind: str) -> Path:
    """The registry YAML of the tiny model `kind` (entry name `tiny_<kind>`)."""
    backend, extra = KINDS[kind]
    return registry(folder, f"tiny_{kind}", backend, **extra)


def save_tiny(kind: str, folder: Path) -> Path:
    """The tiny model `kind` saved in its real format under `folder`."""
    save = {
        "esmc": save_tiny_esmc,
        "prott5": save_tiny_prott5,
        "ankh": save_tiny_ankh,
        "protbert": save_tiny_protbert,
    }[kind]
    return save(folder)


def save_tiny_esmc(folder: Path, seed: int = 0) -> Path:
    """Tiny random ESM-C, saved as EvolutionaryScale ships it: data/weights/esmc_*.pth."""
    from esm_tcav.models.esmc import EsmcNet

    torch.manual_seed(seed)
    net = EsmcNet(TINY["hidden_size"], TINY["num_heads"], TINY["num_layers"])
    for p in net.parameters():  # LayerNorm weights of 1 and zero biases would hide mistakes
        p.data.normal_(0, 0.3 if p.ndim == 1 else 0.2)
    weights = Path(folder) / "data" / "weights"
    weights.mkdir(parents=True)
    torch.save(net.state_dict(), weights / "esmc_tiny_v0.pth")
    return Path(folder)


def save_tiny_t5(folder: Path, vocab_size: int, seed: int, **config) -> None:
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    cfg = T5Config(
        vocab_size=vocab_size,
        d_model=TINY["hidden_size"],
        d_kv=TINY["hidden_size"] // TINY["num_heads"],
        d_ff=2 * TINY["hidden_size"],
        num_layers=TINY["num_layers"],
        num_heads=TINY["num_heads"],
        relative_attention_num_buckets=32,
        dropout_rate=0.0,
        **config,
    )
    T5EncoderModel(cfg).save_pretrained(folder)


def save_tiny_prott5(folder: Path, seed: int = 2) -> Path:
    """Tiny ProtT5: T5EncoderModel + a T5 (Unigram) tokenizer with ProtT5's vocabulary
    (<pad> </s> <unk>, "▁A" ... "▁Z", 100 sentinels), both saved with save_pretrained."""
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(f"▁{c}", -1.0 - i / 100) for i, c in enumerate(PROTT5_LETTERS)]
    tok = T5Tokenizer(vocab=vocab, extra_ids=100)
    tok.save_pretrained(folder)
    save_tiny_t5(folder, len(tok), seed=seed, feed_forward_proj="relu")
    return Path(folder)


def save_tiny_ankh(folder: Path, seed: int = 3) -> Path:
    """Tiny Ankh-like T5 (gated-GELU) with a character-level tokenizer (no "▁" marks)."""
    from tokenizers import Tokenizer, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    names = ["<pad>", "</s>", "<unk>", *"LAGVESIKRDTPNQFYMHCWXUBZO", "<mask>"]
    core = Tokenizer(WordLevel({t: i for i, t in enumerate(names)}, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    tok.save_pretrained(folder)
    save_tiny_t5(folder, len(names), seed=seed, feed_forward_proj="gated-gelu")
    return Path(folder)


def save_tiny_bert(folder: Path, seed: int) -> None:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(
        vocab_size=len(PROTBERT_VOCAB),
        hidden_size=TINY["hidden_size"],
        num_hidden_layers=TINY["num_layers"],
        num_attention_heads=TINY["num_heads"],
        intermediate_size=2 * TINY["hidden_size"],
        max_position_embeddings=1100,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    BertModel(cfg, add_pooling_layer=False).save_pretrained(folder)


def save_tiny_protbert(folder: Path, seed: int = 4) -> Path:
    """Tiny ProtBERT: BertModel + BertTokenizer from ProtBERT's vocab.txt (save_pretrained)."""
    from transformers import BertTokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder.parent / f"{folder.name}_vocab.txt"
    vocab.write_text("\n".join(PROTBERT_VOCAB) + "\n")
    BertTokenizer(str(vocab), do_lower_case=False).save_pretrained(folder)
    save_tiny_bert(folder, seed=seed)
    return folder
