import dataclasses
import json

import numpy as np
import pytest
import torch
from transformers import EsmModel

from esm_tcav.engine.batching import stitch, tile_starts
from esm_tcav.engine.forward import ForwardEngine
from esm_tcav.errors import ConfigError, ModelMismatchError
from esm_tcav.io.proteins import Protein
from esm_tcav.models.loading import load_model
from esm_tcav.models.registry import get_spec

SEQS = ["MKTAYIAKQRQISFVKSHFSRQ", "MKV", "ACDEFGHIKLMNPQRSTVWYXBUZO", "MSTNPKPQRKTKRNTNRRPQDVKFPGG"]


def proteins():
    return [Protein(f"p{i}", s) for i, s in enumerate(SEQS)]


def test_registry_resolves_negative_and_zero_taps():
    spec = get_spec("esm2_t33_650M_UR50D")
    assert spec.resolve_layers([-1, 0, 11]) == [0, 11, 33]
    with pytest.raises(ConfigError, match="out of range"):
        spec.resolve_layers([34])


def test_hf_folder_loads_and_matches_reference(tiny_hf_folder, tiny_registry):
    m = load_model("tiny_esm2", tiny_hf_folder, registry_file=tiny_registry)
    assert m.head_kind == "sequence_classification"
    tokens, mask = m.alphabet.batch(SEQS)
    ref = EsmModel.from_pretrained(tiny_hf_folder, add_pooling_layer=False).eval()
    with torch.inference_mode():
        ours = m.forward(tokens, mask, [0, 1, 3])
        theirs = ref(input_ids=tokens, attention_mask=mask, output_hidden_states=True)
    for layer in (0, 1, 3):
        assert torch.allclose(ours[layer], theirs.hidden_states[layer], atol=1e-5)


def test_fair_esm_pt_equals_hf_folder(tiny_fair_pt, tiny_mlm_folder, tiny_registry):
    a = load_model("tiny_esm2", tiny_fair_pt, registry_file=tiny_registry)
    b = load_model("tiny_esm2", tiny_mlm_folder, registry_file=tiny_registry)
    assert a.head_kind == b.head_kind == "masked_lm"
    assert a.fingerprint == b.fingerprint
    ea, eb = ForwardEngine(a, [1, 3]), ForwardEngine(b, [1, 3])
    for (_, sa), (_, sb) in zip(
        ea.iter_residue_states(proteins()), eb.iter_residue_states(proteins()), strict=True
    ):
        assert np.abs(sa[3] - sb[3]).max() < 1e-5


def test_registry_mismatch_is_one_clear_error(tiny_hf_folder):
    with pytest.raises(
        ModelMismatchError,
        match="hidden size is 32 but registry entry 'esm2_t6_8M_UR50D' expects 320",
    ):
        load_model("esm2_t6_8M_UR50D", tiny_hf_folder)


def test_hub_model_refused_offline():
    with pytest.raises(ConfigError, match="downloads are off"):
        load_model("esm2_t33_650M_UR50D")


def test_bad_path_and_corrupt_pt(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_model("esm2_t6_8M_UR50D", tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelMismatchError, match="cannot read as a fair-esm checkpoint"):
        load_model("esm2_t6_8M_UR50D", bad)


def test_batched_equals_one_by_one(tiny_hf_folder, tiny_registry):
    m = load_model("tiny_esm2", tiny_hf_folder, registry_file=tiny_registry)
    batched = dict((p.id, s) for p, s in ForwardEngine(m, [2, 3]).iter_residue_states(proteins()))
    single = ForwardEngine(m, [2, 3], toks_per_batch=64)
    for p in proteins():
        ((_, s),) = list(single.iter_residue_states([p]))
        assert s[3].shape == (len(p.sequence), 32)
        assert np.abs(s[3] - batched[p.id][3]).max() < 1e-4


def test_tiling_equals_untiled_when_protein_fits(tiny_hf_folder, tiny_registry):
    m = load_model("tiny_esm2", tiny_hf_folder, registry_file=tiny_registry)
    prot = [Protein("long", "MKTAYIAKQRQISFVKSHFSRQ" * 5)]
    ((_, full),) = list(ForwardEngine(m, [3]).iter_residue_states(prot))
    same_engine = ForwardEngine(m, [3], window=110, tile_overlap=20)
    ((_, same),) = list(same_engine.iter_residue_states(prot))
    assert np.array_equal(full[3], same[3])
    tiled_engine = ForwardEngine(m, [3], window=40, tile_overlap=12)
    ((_, tiled),) = list(tiled_engine.iter_residue_states(prot))
    assert tiled[3].shape == full[3].shape
    assert np.corrcoef(tiled[3].ravel(), full[3].ravel())[0, 1] > 0.5


def test_tile_starts_and_stitch_pick_the_central_tile():
    assert tile_starts(10, 20, 5) == [0]
    starts = tile_starts(100, 40, 10)
    assert starts[0] == 0 and starts[-1] == 60
    assert all(b - a <= 30 for a, b in zip(starts, starts[1:], strict=False))
    tiles = {s: np.full((40, 1), s, dtype=np.float32) for s in starts}
    merged = stitch(100, tiles, 40)
    # residue 35 (0-based) sits at offset 35 of tile 0 and offset 5 of tile 30: tile 30 wins
    assert merged[35, 0] == 30 and merged[0, 0] == 0 and merged[99, 0] == 60


def test_guardrail_corrects_tokenizer_without_bos(tiny_hf_folder, tiny_registry, tmp_path):
    m = load_model("tiny_esm2", tiny_hf_folder, registry_file=tiny_registry)
    no_bos = dataclasses.replace(m.alphabet, prepend_bos=False)
    emb = ForwardEngine(m, [3], log_dir=tmp_path, alphabet=no_bos)
    out = list(emb.iter_residue_states(proteins()))
    assert all(s[3].shape[0] == len(p.sequence) for p, s in out)
    log_file = tmp_path / "indexing_corrections.jsonl"
    lines = [json.loads(x) for x in log_file.read_text().splitlines()]
    assert len(lines) == len(SEQS)
    assert {ln["actual_offset"] for ln in lines} == {0}
    ok = ForwardEngine(m, [3], log_dir=tmp_path / "ok")
    list(ok.iter_residue_states(proteins()))
    assert not (tmp_path / "ok" / "indexing_corrections.jsonl").exists()


@pytest.mark.slow
def test_t6_batched_vs_single_and_tiling(t6):
    prots = [Protein(f"q{i}", s * 4) for i, s in enumerate(SEQS)]
    batched = {p.id: s for p, s in ForwardEngine(t6, [2, 6]).iter_residue_states(prots)}
    worst = 0.0
    for p in prots:
        ((_, s),) = list(ForwardEngine(t6, [2, 6], toks_per_batch=64).iter_residue_states([p]))
        worst = max(worst, float(np.abs(s[6] - batched[p.id][6]).max()))
    print(f"max abs diff batched vs one-by-one: {worst:.2e}")
    assert worst < 1e-3


def test_packed_embedder_equals_hugging_face_padded(tiny_hf_folder, tiny_registry):
    m = load_model("tiny_esm2", tiny_hf_folder, registry_file=tiny_registry)
    packed = {p.id: s for p, s in ForwardEngine(m, [0, 2, 3]).iter_residue_states(proteins())}
    reference = ForwardEngine(m, [0, 2, 3], mode="padded")
    padded = {p.id: s for p, s in reference.iter_residue_states(proteins())}
    for pid, states in padded.items():
        for layer in (0, 2, 3):
            assert np.abs(states[layer] - packed[pid][layer]).max() < 1e-4


def test_fingerprint_does_not_depend_on_dtype(tiny_hf_folder, tiny_registry):
    a = load_model("tiny_esm2", tiny_hf_folder, registry_file=tiny_registry)
    b = load_model("tiny_esm2", tiny_hf_folder, registry_file=tiny_registry, dtype="bfloat16")
    assert b.dtype == torch.bfloat16 and a.fingerprint == b.fingerprint


def test_saved_cav_is_readable_by_the_group(tmp_path):
    import os
    import stat

    from esm_tcav.concepts.cav import CAV

    old = os.umask(0o022)
    try:
        CAV("c", 1, np.ones(4, np.float32) / 2, 0.1).save(tmp_path / "c.safetensors")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "c.safetensors").stat().st_mode) == 0o644
