import json

import numpy as np
import pytest
from typer.testing import CliRunner

from esm_tcav.cli import app
from esm_tcav.engine.forward import ForwardEngine
from esm_tcav.engine.store import EmbeddingStore
from esm_tcav.errors import ArtifactError
from esm_tcav.io.proteins import Protein, Span

PROTS = [
    Protein("a", "MKTAYIAKQRQISFVKSHFSRQ", (Span(3, 9, "x"),)),
    Protein("b", "MKVLAAGIVG"),
    Protein("c", "ACDEFGHIKLMNPQRSTVWY"),
]


def test_store_roundtrip_memory_mapped(tiny, tmp_path):
    items = list(ForwardEngine(tiny, [1, 3]).iter_residue_states(PROTS))
    store = EmbeddingStore(tmp_path, tiny.fingerprint, residue_dtype="float32")
    store.write_shard(items)
    again = EmbeddingStore(tmp_path, tiny.fingerprint, residue_dtype="float32")
    for prot, states in items:
        assert np.array_equal(again.residues(prot.seq_hash, 3), states[3])
        assert np.allclose(again.mean(prot.seq_hash, 1), states[1].mean(0), atol=1e-6)
    assert np.allclose(
        again.span(PROTS[0].seq_hash, 3, 3, 9, "x"), items[0][1][3][2:9].mean(0), atol=1e-6
    )
    assert again.missing(PROTS, [1, 3]) == []
    assert [p.id for p in again.missing(PROTS, [2])] == ["a", "b", "c"]
    shard = next(tmp_path.glob("*/shard-*"))
    assert isinstance(np.load(shard / "L3.residues.npy", mmap_mode="r"), np.memmap)


def test_killed_write_leaves_no_shard(tiny, tmp_path, monkeypatch):
    items = list(ForwardEngine(tiny, [1]).iter_residue_states(PROTS))
    store = EmbeddingStore(tmp_path, tiny.fingerprint)
    import esm_tcav.engine.store as store_mod

    calls = {"n": 0}
    real = store_mod.save_npy

    def dying_save(path, arr):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        real(path, arr)

    monkeypatch.setattr(store_mod, "save_npy", dying_save)
    with pytest.raises(KeyboardInterrupt):
        store.write_shard(items)
    assert list((tmp_path / tiny.fingerprint).iterdir()) == []
    assert EmbeddingStore(tmp_path, tiny.fingerprint).missing(PROTS, [1]) == PROTS


def test_corrupt_index_is_a_clear_error(tiny, tmp_path):
    store = EmbeddingStore(tmp_path, tiny.fingerprint)
    store.write_shard(list(ForwardEngine(tiny, [1]).iter_residue_states(PROTS)))
    index = next(tmp_path.glob("*/shard-*/index.json"))
    index.write_text("{broken")
    with pytest.raises(ArtifactError, match="unreadable shard index"):
        EmbeddingStore(tmp_path, tiny.fingerprint)


def _write_config(tmp_path, tiny_hf_folder, tiny_registry, n=6):
    pos = tmp_path / "pos.jsonl"
    neg = tmp_path / "neg.fasta"
    rng = np.random.default_rng(0)
    aa = list("ACDEFGHIKLMNPQRSTVWY")
    with pos.open("w") as fh:
        for i in range(n):
            seq = "".join(rng.choice(aa, 40))
            fh.write(
                json.dumps(
                    {
                        "accession": f"P{i}",
                        "sequence": seq,
                        "ground_truth_annotations": [
                            {"motif_id": "m", "start": 5, "end": 15, "name": "m"}
                        ],
                    }
                )
                + "\n"
            )
    neg.write_text("".join(f">N{i}\n{''.join(rng.choice(aa, 40))}\n" for i in range(n)))
    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        f"output_dir: out\nmodel:\n  name: tiny_esm2\n  path: {tiny_hf_folder}\n"
        f"  registry_file: {tiny_registry}\n  layers: [1, 3]\n"
        f"embed:\n  shard_residues: 100\ndata:\n  positives: pos.jsonl\n  negatives: neg.fasta\n"
    )
    return cfg


def test_embed_cli_resumes_without_redoing(tmp_path, tiny_hf_folder, tiny_registry):
    cfg = _write_config(tmp_path, tiny_hf_folder, tiny_registry)
    runner = CliRunner()
    first = runner.invoke(app, ["embed", str(cfg), "--shard", "0/2"])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["embedded_now"] == 6
    second = runner.invoke(app, ["embed", str(cfg)])
    assert second.exit_code == 0, second.output
    out = json.loads(second.stdout)
    assert out["embedded_now"] == 6 and out["reused"] == 6
    third = runner.invoke(app, ["embed", str(cfg)])
    assert json.loads(third.stdout)["embedded_now"] == 0
    assert (tmp_path / "out" / "config.snapshot.yaml").is_file()


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, tiny_hf_folder, tiny_registry):
    cfg = _write_config(tmp_path, tiny_hf_folder, tiny_registry)
    (tmp_path / "neg.fasta").write_text(">N1\nMKV#L\n")
    res = CliRunner().invoke(app, ["embed", str(cfg)])
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "neg.fasta" in lines[0]
    assert not (tmp_path / "out" / "embeddings").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  positives: p\n  negatives: n\ntrain:\n  foldz: 3\n")
    res = CliRunner().invoke(app, ["embed", str(bad)])
    assert res.exit_code == 2 and "key 'train.foldz': unknown key" in res.stderr
