"""The model backends beyond ESM-2: ESM-C, T5 encoders (ProtT5, Ankh), generic Hugging Face.

Each is tested on a tiny random-weight model saved in that model's real file format (ESM-C's
checkpoint layout, `save_pretrained` folders with their tokenizers), as users will point
`model.path` at them: the states equal the model library's own forward at the right tokens, the
indexing guard catches a planted offset, and the whole `esm-tcav run` and `scan` run on each.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from esm_tcav.engine.forward import ForwardEngine
from esm_tcav.errors import ConfigError, InputError, ModelMismatchError
from esm_tcav.io.proteins import Protein
from esm_tcav.io.readers import read_fasta
from esm_tcav.models.loading import load_model

from .backend_models import registry, save_tiny, save_tiny_bert, tiny_registry
from .test_pipeline import _invoke, write_planted_run
from .test_scan import _read_tsv, make_library, planted_proteins, write_fasta

SEQS = ["MKTAYIAKQRQISFVKSHFSRQ", "MKV", "ACDEFGHIKLMNPQRSTVWYX", "MSTNPKPQRKTKRNTNRRPQDVKFPGG"]


def proteins(seqs=SEQS) -> list[Protein]:
    return [Protein(f"p{i}", s) for i, s in enumerate(seqs)]


# ---------------------------------------------------------------- fixtures: real file formats


def _tiny(tmp_path_factory, kind: str) -> dict[str, Path]:
    root = tmp_path_factory.mktemp(kind)
    return {"folder": save_tiny(kind, root / "model"), "registry": tiny_registry(root, kind)}


@pytest.fixture(scope="module")
def esmc_files(tmp_path_factory):
    return _tiny(tmp_path_factory, "esmc")


@pytest.fixture(scope="module")
def prott5_files(tmp_path_factory):
    return _tiny(tmp_path_factory, "prott5")


@pytest.fixture(scope="module")
def ankh_files(tmp_path_factory):
    return _tiny(tmp_path_factory, "ankh")


@pytest.fixture(scope="module")
def protbert_files(tmp_path_factory):
    return _tiny(tmp_path_factory, "protbert")


# ---------------------------------------------------------------- the alphabet moved to the model


def test_a_letter_esm2_lacks_is_read_and_refused_at_embed_time(
    tmp_path, tiny_hf_folder, tiny_registry
):
    fasta = tmp_path / "j.fasta"
    fasta.write_text(">P1\nMKJV\n")
    (prot,) = read_fasta(fasta)  # any letter reads; the model decides at embed time
    assert prot.sequence == "MKJV"
    m = load_model("tiny_esm2", tiny_hf_folder, registry_file=tiny_registry)
    engine = ForwardEngine(m, [1])
    with pytest.raises(InputError, match="'P1': character 'J' is not in the ESM-2 alphabet"):
        list(engine.iter_residue_states([prot]))


# ---------------------------------------------------------------- ESM-C


def test_esmc_loads_its_checkpoint_layout(esmc_files):
    m = load_model("tiny_esmc", esmc_files["folder"], registry_file=esmc_files["registry"])
    assert (m.hidden_size, m.num_layers, m.residue_offset) == (32, 3, 1)
    assert m.head_kind == "masked_lm" and m.supports_packed
    assert m.alphabet.name == "ESM-C" and "J" not in m.residues and "U" in m.residues
    file = next(esmc_files["folder"].rglob("*.pth"))
    again = load_model("tiny_esmc", file, registry_file=esmc_files["registry"])
    assert again.fingerprint == m.fingerprint


def test_esmc_safetensors_and_bad_files(esmc_files, tmp_path):
    from safetensors.torch import save_file

    reg = esmc_files["registry"]
    m = load_model("tiny_esmc", esmc_files["folder"], registry_file=reg)
    state = torch.load(next(esmc_files["folder"].rglob("*.pth")), weights_only=True)
    save_file(state, tmp_path / "model.safetensors")
    again = load_model("tiny_esmc", tmp_path / "model.safetensors", registry_file=reg)
    assert again.fingerprint == m.fingerprint
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelMismatchError, match="cannot read as an ESM-C checkpoint"):
        load_model("tiny_esmc", bad, registry_file=reg)
    del state["transformer.blocks.1.ffn.1.weight"]
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(ModelMismatchError, match="does not fit ESM-C .missing"):
        load_model("tiny_esmc", tmp_path / "cut.pth", registry_file=reg)


@pytest.mark.parametrize("kind", ["esmc", "prott5"])
def test_forward_from_any_layer_continues_the_forward(kind, esmc_files, prott5_files):
    """TCAV differentiates the head from a middle layer on: forward_from(k, states at k) must
    give the final states of the whole forward."""
    m = _load(esmc_files if kind == "esmc" else prott5_files, f"tiny_{kind}")
    tokens, mask = m.alphabet.batch(SEQS)
    with torch.inference_mode():
        states = m.forward(tokens, mask, [0, 1, 2, 3])
        for k in (0, 1, 2, 3):
            final = m.forward_from(k, states[k], mask)
            real = mask.bool()
            assert torch.allclose(final[real], states[3][real], atol=1e-5), k


def test_esmc_packed_gradients_equal_padded_ones(esmc_files):
    """Gradient TCAV on ESM-C runs on packed rows (`between`, all layers in one pass); the
    padded reference takes one pass per layer (ESM-C stops only at the end)."""
    from esm_tcav.concepts.tcav import layer_gradients, make_target, summed_gradients

    m = _load(esmc_files, "tiny_esmc")
    m.to(dtype=torch.float64)
    target = make_target(m, "masked_lm")
    packed = layer_gradients(m, SEQS, [1, 2, 3], target, m.packed_encoder())
    for layer in (1, 2, 3):
        padded = summed_gradients(m, SEQS, layer, target)
        assert np.allclose(packed[layer], padded, rtol=1e-9, atol=1e-12), layer
    assert np.abs(packed[1]).max() > 1e-6


def test_esmc_packed_equals_padded_and_batching_changes_nothing(esmc_files):
    m = load_model("tiny_esmc", esmc_files["folder"], registry_file=esmc_files["registry"])
    packed = ForwardEngine(m, [0, 2, 3])
    assert packed.mode == "packed"
    a = {p.id: s for p, s in packed.iter_residue_states(proteins())}
    b = {
        p.id: s
        for p, s in ForwardEngine(m, [0, 2, 3], mode="padded").iter_residue_states(proteins())
    }
    for p in proteins():
        ((_, single),) = list(ForwardEngine(m, [3], mode="padded").iter_residue_states([p]))
        assert np.abs(single[3] - b[p.id][3]).max() < 1e-5
        for layer in (0, 2, 3):
            assert np.abs(a[p.id][layer] - b[p.id][layer]).max() < 1e-5
    assert max(np.abs(s[3]).max() for s in a.values()) > 0.1  # not all zeros


def _esmc_by_hand(net, tokens: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """ESM-C written out once more from the reference code, one protein, no masks: block
    outputs and final states (an independent check of block_forward's reshapes)."""
    x = net.embed(tokens)
    L = x.shape[1]
    outs = []
    for block in net.transformer.blocks:
        att = block.attn
        h = att.layernorm_qkv(x)
        q, k, v = torch.chunk(h, 3, dim=-1)
        q, k = att.q_ln(q), att.k_ln(k)
        nh = att.n_heads
        dh = x.shape[-1] // nh
        inv = 1 / (10000 ** (torch.arange(0, dh, 2).float() / dh))
        fr = torch.outer(torch.arange(L).float(), inv)
        cos = torch.cat([fr.cos(), fr.cos()], -1)[:, None]
        sin = torch.cat([fr.sin(), fr.sin()], -1)[:, None]

        rotated = []
        for t in (q, k):
            t = t.unflatten(-1, (nh, dh))
            t1, t2 = t.chunk(2, -1)
            rotated.append((t * cos + torch.cat([-t2, t1], -1) * sin).flatten(-2))
        q, k = rotated
        q, k, v = (t.unflatten(-1, (nh, dh)).transpose(1, 2) for t in (q, k, v))
        att_w = torch.softmax(q @ k.transpose(-1, -2) / dh**0.5, -1)
        ctx = (att_w @ v).transpose(1, 2).flatten(-2)
        x = x + att.out_proj(ctx) / block.scaling_factor
        x = x + block.ffn(x) / block.scaling_factor
        outs.append(x)
    return outs, net.transformer.norm(x)


def test_esmc_layers_equal_the_architecture_written_out(esmc_files):
    m = load_model("tiny_esmc", esmc_files["folder"], registry_file=esmc_files["registry"])
    tokens, mask = m.alphabet.batch([SEQS[0]])
    with torch.inference_mode():
        ours = m.forward(tokens, mask, [1, 2, 3])
        blocks, final = _esmc_by_hand(m.net, tokens)
    assert torch.allclose(ours[1], blocks[0], atol=1e-5)
    assert torch.allclose(ours[2], blocks[1], atol=1e-5)
    assert torch.allclose(ours[3], final, atol=1e-5)


def test_esmc_equals_evolutionaryscale_reference(tmp_path):
    """Runs where EvolutionaryScale's `esm` imports (it cannot be a dependency: it pins
    transformers<4.48.2); the closing note of issue 10 records the comparison."""
    esmc_mod = pytest.importorskip("esm.models.esmc")
    from esm.tokenization import EsmSequenceTokenizer

    torch.manual_seed(5)
    ref = esmc_mod.ESMC(64, 4, 4, EsmSequenceTokenizer(), use_flash_attn=False).eval()
    for p in ref.parameters():
        p.data.normal_(0, 0.3 if p.ndim == 1 else 0.2)
    file = tmp_path / "esmc_ref.pth"
    torch.save(ref.state_dict(), file)
    reg = registry(tmp_path, "ref_esmc", "esmc", hidden_size=64, num_layers=4, num_heads=4)
    m = load_model("ref_esmc", file, registry_file=reg)
    tokens, mask = m.alphabet.batch(SEQS)
    with torch.inference_mode():
        theirs = ref(sequence_tokens=tokens)
        ours = m.forward(tokens, mask, [1, 2, 3, 4])
        logits = m.head_logits(ours[4])
    worst = 0.0
    for i, seq in enumerate(SEQS):
        real = slice(0, len(seq) + 2)
        for layer in (1, 2, 3):
            d = (ours[layer][i, real] - theirs.hidden_states[layer - 1][i, real]).abs().max()
            worst = max(worst, float(d))
        worst = max(worst, float((ours[4][i, real] - theirs.embeddings[i, real]).abs().max()))
        worst = max(worst, float((logits[i, real] - theirs.sequence_logits[i, real]).abs().max()))
    print(f"ESM-C vs EvolutionaryScale reference: max abs difference {worst:.2e}")
    assert worst < 1e-5


def test_esmc_guard_catches_a_planted_offset(esmc_files, tmp_path):
    m = load_model("tiny_esmc", esmc_files["folder"], registry_file=esmc_files["registry"])
    no_bos = dataclasses.replace(m.alphabet, prepend_bos=False)
    out = list(
        ForwardEngine(m, [3], log_dir=tmp_path, alphabet=no_bos).iter_residue_states(proteins())
    )
    assert all(s[3].shape[0] == len(p.sequence) for p, s in out)
    log_file = tmp_path / "indexing_corrections.jsonl"
    lines = [json.loads(x) for x in log_file.read_text().splitlines()]
    assert len(lines) == len(SEQS) and {ln["actual_offset"] for ln in lines} == {0}
    ok = tmp_path / "ok"
    list(ForwardEngine(m, [3], log_dir=ok).iter_residue_states(proteins()))
    assert not (ok / "indexing_corrections.jsonl").exists()


def test_esmc_registry_and_offline_rules(esmc_files):
    from esm_tcav.models.registry import get_spec

    for name, size in (("esmc_300m", (960, 30, 15)), ("esmc_600m", (1152, 36, 18))):
        spec = get_spec(name)
        assert (spec.hidden_size, spec.num_layers, spec.num_heads) == size
        assert spec.backend == "esmc"
        with pytest.raises(ConfigError, match="downloads are off"):
            load_model(name)
    with pytest.raises(ModelMismatchError, match="hidden size is 32 but registry entry"):
        load_model("esmc_300m", esmc_files["folder"])


# ---------------------------------------------------------------- T5 (ProtT5, Ankh) and BERT


def _load(files: dict, name: str):
    return load_model(name, files["folder"], registry_file=files["registry"])


def _engine_states(m, layers, prots, **kw) -> dict[str, dict[int, np.ndarray]]:
    return {p.id: s for p, s in ForwardEngine(m, layers, **kw).iter_residue_states(prots)}


@pytest.mark.parametrize("kind", ["prott5", "ankh"])
def test_t5_states_equal_t5_encoder_model_on_the_models_own_tokens(
    kind, prott5_files, ankh_files, caplog
):
    """The engine (padded, chosen automatically) gives the library's states for each residue,
    the library called as each model's authors do: ProtT5 spaced residues with U/Z/O/B replaced
    by X, Ankh residues as words (`is_split_into_words`), both ending with </s>."""
    import re

    from transformers import AutoTokenizer, T5EncoderModel

    files = prott5_files if kind == "prott5" else ankh_files
    m = _load(files, f"tiny_{kind}")
    assert m.residue_offset == 0 and not m.supports_packed and m.head_kind is None
    assert {"U", "Z", "O", "B", "X"} <= m.residues and "J" not in m.residues
    seqs = [*SEQS, "MKUZOBVL"]
    engine = ForwardEngine(m, [1, 3])
    assert engine.mode == "padded"
    ours = {p.id: s for p, s in engine.iter_residue_states(proteins(seqs))}
    tok = AutoTokenizer.from_pretrained(files["folder"])
    ref = T5EncoderModel.from_pretrained(files["folder"]).eval()
    for i, seq in enumerate(seqs):
        if kind == "prott5":
            ids = tok(" ".join(re.sub(r"[UZOB]", "X", seq)), return_tensors="pt")["input_ids"]
        else:
            ids = tok([list(seq)], is_split_into_words=True, return_tensors="pt")["input_ids"]
        assert ids[0, -1] == tok.eos_token_id and ids.shape[1] == len(seq) + 1  # </s>, no BOS
        with torch.inference_mode():
            out = ref(input_ids=ids, output_hidden_states=True)
        final = out.last_hidden_state[0, : len(seq)].numpy()
        assert np.abs(ours[f"p{i}"][3] - final).max() < 1e-5
        first = out.hidden_states[1][0, : len(seq)].numpy()
        assert np.abs(ours[f"p{i}"][1] - first).max() < 1e-5
    rare_as_x = m.alphabet.encode("MKUZOBVL") == m.alphabet.encode("MKXXXXVL")
    assert rare_as_x == (kind == "prott5")  # the registry entry says which model does it
    with caplog.at_level(logging.INFO, logger="esm_tcav.models"):
        m.check_sequence("MKUUZV", "protein 'r'")
    said = "protein 'r': tiny_prott5 reads U (2) as X, Z (1) as X" in caplog.text
    assert said == (kind == "prott5"), caplog.text
    with pytest.raises(ConfigError, match="no packed forward"):
        ForwardEngine(m, [1], mode="packed")


def test_protbert_states_equal_bert_model_on_its_own_tokens(protbert_files):
    from transformers import BertModel, BertTokenizer

    m = _load(protbert_files, "tiny_protbert")
    assert m.residue_offset == 1 and m.alphabet.bos == "[CLS]" and m.alphabet.eos == "[SEP]"
    engine = ForwardEngine(m, [2, 3])
    assert engine.mode == "padded"
    ours = {p.id: s for p, s in engine.iter_residue_states(proteins())}
    tok = BertTokenizer.from_pretrained(protbert_files["folder"])
    ref = BertModel.from_pretrained(protbert_files["folder"], add_pooling_layer=False).eval()
    for i, seq in enumerate(SEQS):
        ids = tok(" ".join(seq), return_tensors="pt")
        assert ids["input_ids"].shape[1] == len(seq) + 2
        with torch.inference_mode():
            out = ref(**ids, output_hidden_states=True)
        assert np.abs(ours[f"p{i}"][3] - out.last_hidden_state[0, 1:-1].numpy()).max() < 1e-5
        assert np.abs(ours[f"p{i}"][2] - out.hidden_states[2][0, 1:-1].numpy()).max() < 1e-5


def test_bpe_tokenizer_is_refused_with_one_clear_message(tmp_path):
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    letters = list("ACDEFGHIKLMNPQRSTVWY")
    vocab = {t: i for i, t in enumerate(["<pad>", "<unk>", *letters, "MK", "MKT"])}
    core = Tokenizer(BPE(vocab, [("M", "K"), ("MK", "T")], unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    folder = tmp_path / "bpe"
    PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="<pad>", unk_token="<unk>"
    ).save_pretrained(folder)
    save_tiny_bert(folder, seed=5)
    reg = registry(tmp_path, "bpe_model", "hf_encoder")
    with pytest.raises(ModelMismatchError) as info:
        load_model("bpe_model", folder, registry_file=reg)
    message = str(info.value)
    assert "\n" not in message and str(folder) in message
    assert "tokens of several residues ('MK'" in message and "BPE-style" in message


@pytest.mark.parametrize("kind", ["prott5", "protbert"])
def test_guard_catches_a_planted_offset(kind, prott5_files, protbert_files, tmp_path):
    """A tokenization that shifts residue 1 (a stray BOS for ProtT5, none for ProtBERT) is
    found, logged, and corrected: the states are those of the right tokens."""
    files = prott5_files if kind == "prott5" else protbert_files
    m = _load(files, f"tiny_{kind}")
    a = m.alphabet
    shifted = (
        dataclasses.replace(a, bos=a.pad, prepend_bos=True)
        if kind == "prott5"
        else dataclasses.replace(a, prepend_bos=False)
    )
    out = _engine_states(m, [3], proteins(), log_dir=tmp_path, alphabet=shifted)
    assert all(out[p.id][3].shape[0] == len(p.sequence) for p in proteins())
    lines = [
        json.loads(x) for x in (tmp_path / "indexing_corrections.jsonl").read_text().splitlines()
    ]
    assert len(lines) == len(SEQS)
    assert {(ln["expected_offset"], ln["actual_offset"]) for ln in lines} == (
        {(0, 1)} if kind == "prott5" else {(1, 0)}
    )
    ok = tmp_path / "ok"
    _engine_states(m, [3], proteins(), log_dir=ok)
    assert not (ok / "indexing_corrections.jsonl").exists()


def test_registry_entries_at_the_real_sizes():
    from esm_tcav.models.registry import get_spec

    sizes = {
        "prot_t5_xl_uniref50": ("t5", 1024, 24, 32),
        "ankh_base": ("t5", 768, 48, 12),
        "ankh_large": ("t5", 1536, 48, 16),
        "prot_bert": ("hf_encoder", 1024, 30, 16),
    }
    for name, (backend, hidden, layers, heads) in sizes.items():
        spec = get_spec(name)
        assert (spec.backend, spec.hidden_size, spec.num_layers, spec.num_heads) == (
            backend,
            hidden,
            layers,
            heads,
        )
        with pytest.raises(ConfigError, match="downloads are off"):
            load_model(name)


# ---------------------------------------------------------------- the whole run and scan, each

KINDS = ["esmc", "prott5", "ankh", "protbert"]


@pytest.mark.parametrize("kind", KINDS)
def test_whole_run_on_each_backend(kind, request, tmp_path):
    """embed → train → evaluate → detect → tcav → report from one config whose model section
    names the backend's registry entry and folder (the config change that swaps models)."""
    files = request.getfixturevalue(f"{kind}_files")
    name = f"tiny_{kind}"
    model = {"name": name, "path": str(files["folder"]), "registry_file": str(files["registry"])}
    cfg = write_planted_run(tmp_path, files["folder"], files["registry"], model=model)
    result = _invoke("run", str(cfg), "--json")
    assert result.exit_code == 0, result.output
    steps = json.loads(result.stdout)["steps"]
    assert list(steps) == ["embed", "train", "evaluate", "detect", "tcav", "report"]
    out = tmp_path / "out"
    manifest = json.loads((out / "run_manifest.json").read_text())
    assert manifest["model"]["name"] == name and manifest["model"]["fingerprint"]
    assert manifest["steps"]["embed"]["result"]["embedded_now"] == 32
    assert (out / "cavs" / name / "summary_v1.json").is_file()
    assert (out / "evaluations" / name / "projection_eval.json").is_file()
    # the detection layer is chosen on the training proteins, so it may differ per model
    assert len(list((out / "detections" / name / "test").glob("L*/spans.gff3"))) == 1
    assert (out / "report.html").is_file()
    assert not (out / "logs" / "indexing_corrections.jsonl").exists()
    if kind == "esmc":  # gradient TCAV through ESM-C's sequence head (masked-LM target)
        tcav = json.loads((out / "tcav" / name / "tcav_scores.json").read_text())
        assert tcav["target"]["kind"] == "masked_lm"
        assert set(tcav["layers"]) == {"1", "2", "3"}
    else:  # no head: TCAV is skipped, said plainly
        assert "no sequence-classification or masked-LM head" in json.dumps(
            manifest["steps"]["tcav"]
        )


def separating_cav(m, layer: int, prots: list[Protein]):
    """A W-residue CAV for a random model: a linear separator of W and non-W residues fitted on
    the proteins to scan (a random model does not order them along the mean difference as a
    trained one would), its threshold halfway between the two classes."""
    from sklearn.svm import LinearSVC

    from esm_tcav.concepts.cav import CAV

    states = _engine_states(m, [layer], prots)
    X = np.concatenate([states[p.id][layer] for p in prots]).astype(np.float64)
    y = np.concatenate([np.array([c == "W" for c in p.sequence]) for p in prots])
    svm = LinearSVC(C=1e3, max_iter=100_000).fit(X, y)
    d = svm.coef_[0] / np.linalg.norm(svm.coef_[0])
    s = X @ d
    assert s[y].min() > s[~y].max(), "setup: W residues not linearly separable"
    return CAV("trp_run", layer, d.astype(np.float32), float(-(s[y].min() + s[~y].max()) / 2))


@pytest.mark.parametrize("kind", KINDS)
def test_scan_on_each_backend(kind, request, tmp_path):
    """`scan` loads the backend from the library's model record and finds the planted W runs
    exactly (the concept is the W vs non-W direction of that model's own states)."""
    from esm_tcav.localize.scan import run_scan

    files = request.getfixturevalue(f"{kind}_files")
    m = _load(files, f"tiny_{kind}")
    items = planted_proteins(9)
    lib = make_library(tmp_path / "lib", m, [separating_cav(m, 1, [p for p, _ in items])])
    fasta = write_fasta(tmp_path / "proteins.fasta", [p for p, _ in items])
    summary = run_scan(
        fasta,
        lib,
        tmp_path / "scan",
        model_path=files["folder"],
        registry_file=files["registry"],
        progress=False,
    )
    assert summary["proteins"] == 9
    found: dict[str, list[tuple[int, int]]] = {}
    for row in _read_tsv(tmp_path / "scan" / "scan.tsv"):
        found.setdefault(row[0], []).append((int(row[1]), int(row[2])))
    for prot, runs in items:
        assert found.get(prot.id, []) == runs, prot.id
