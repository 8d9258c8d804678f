"""`esm-tcav scan` and the scan engine, on the tiny random ESM-2 with planted concepts.

The planted concept is "tryptophan runs": its direction is the difference of mean states of W
and non-W residues at a layer (computed from the model itself), so the spans a scan must find
are known exactly: the W runs placed in each test protein. Other concepts are random
directions (for score comparisons: 1 vs 10 concepts, bfloat16 vs float32, packed vs padded).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import EsmModel

from esm_tcav.concepts.cav import CAV
from esm_tcav.concepts.concept import Concept
from esm_tcav.concepts.library import add_to_library, load_library
from esm_tcav.engine.batching import packed_batches, padded_batches, padding_fraction
from esm_tcav.engine.forward import ForwardEngine, Projection
from esm_tcav.errors import ArtifactError, ConfigError, InputError, ModelMismatchError
from esm_tcav.io.proteins import Protein
from esm_tcav.io.readers import iter_fasta, validate_fasta
from esm_tcav.localize import scan as scan_mod
from esm_tcav.localize.scan import (
    load_scan_model,
    merge_shards,
    run_scan,
    slurm_commands,
)
from esm_tcav.models.loading import load_model

BACKGROUND = list("ADEFGIKLMNPQRSTVY")  # no W: W runs are the planted concept
RUN = 8


def _protein(rng, pid: str, length: int, starts: list[int]) -> Protein:
    seq = list(rng.choice(BACKGROUND, length))
    for a in starts:
        seq[a : a + RUN] = "W" * RUN
    return Protein(pid, "".join(seq))


def planted_proteins(n: int, seed: int = 1) -> list[tuple[Protein, list[tuple[int, int]]]]:
    """Proteins with 0-2 W runs at random places; the runs (1-based, inclusive) are the truth."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        length = int(rng.integers(40, 140))
        k = i % 3
        starts = (
            sorted(rng.choice(np.arange(5, length - RUN - 5, RUN + 6), k, replace=False).tolist())
            if k
            else []
        )
        out.append((_protein(rng, f"prot{i}", length, starts), [(a + 1, a + RUN) for a in starts]))
    return out


def planted_cav(loaded, layer: int) -> CAV:
    rng = np.random.default_rng(0)
    cal = [_protein(rng, f"cal{i}", 120, [20, 70]) for i in range(6)]
    states = {p.id: s[layer] for p, s in ForwardEngine(loaded, [layer]).iter_residue_states(cal)}
    X = np.concatenate([states[p.id] for p in cal])
    y = np.concatenate([np.array([c == "W" for c in p.sequence]) for p in cal])
    d = X[y].mean(0) - X[~y].mean(0)
    d /= np.linalg.norm(d)
    s = X @ d
    # threshold 0 halfway between the lowest W and the highest non-W score
    return CAV("trp_run", layer, d.astype(np.float32), float(-(s[y].min() + s[~y].max()) / 2))


def random_cav(name: str, layer: int, hidden: int, seed: int) -> CAV:
    d = np.random.default_rng(seed).normal(size=hidden).astype(np.float32)
    return CAV(name, layer, d / np.linalg.norm(d), 0.1 * seed)


def make_library(root: Path, loaded, cavs: list[CAV], **rules) -> Path:
    model = {
        "name": loaded.spec.name,
        "fingerprint": loaded.fingerprint,
        "hidden_size": loaded.spec.hidden_size,
    }
    for cav in cavs:
        rule = rules.get(cav.concept, {})
        add_to_library(
            root,
            model,
            Concept(
                cav,
                threshold=rule.get("threshold", 0.0),
                smoothing_window=rule.get("smoothing", 1),
                min_span_length=rule.get("min_length", 4),
                merge_gap=rule.get("merge_gap", 1),
            ),
        )
    return root


def write_fasta(path: Path, proteins: list[Protein]) -> Path:
    path.write_text(
        "".join(f">{p.id} test protein\n{p.sequence[:50]}\n{p.sequence[50:]}\n" for p in proteins)
    )
    return path


@pytest.fixture(scope="module")
def planted(tiny, tmp_path_factory):
    """A library with the planted concept (layer 3) and two random ones, and a test FASTA."""
    root = tmp_path_factory.mktemp("scanlib")
    cavs = [planted_cav(tiny, 3), random_cav("rand_a", 1, 32, 1), random_cav("rand_b", 2, 32, 2)]
    lib = make_library(root / "lib", tiny, cavs)
    items = planted_proteins(12)
    fasta = write_fasta(root / "proteins.fasta", [p for p, _ in items])
    return {"lib": lib, "fasta": fasta, "items": items, "cavs": cavs, "root": root}


def _read_tsv(path: Path) -> list[list[str]]:
    return [line.rstrip("\n").split("\t") for line in path.read_text().splitlines()[1:]]


def _digest(folder: Path) -> dict[str, str]:
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest() for n in scan_mod.FILES}


# ---------------------------------------------------------------------- batching


def test_batches_respect_the_budget_and_packing_has_no_padding():
    lengths = [300, 20, 25, 310, 18, 120, 119, 5]
    padded = padded_batches(lengths, 700)
    packed = packed_batches(lengths, 700)
    for groups in (padded, packed):
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert all((max(lengths[i] for i in g) + 2) * len(g) <= 700 for g in padded)
    assert all(sum(lengths[i] + 2 for i in g) <= 700 for g in packed)
    assert len(packed) <= len(padded)
    assert padding_fraction(lengths, packed, packed=True) == 0.0
    assert 0 < padding_fraction(lengths, padded, packed=False) < 0.5


# ---------------------------------------------------------------------- the forward paths


@pytest.mark.parametrize("dtype,tol", [("float32", 1e-5), ("bfloat16", 3e-2)])
def test_packed_forward_matches_hf_esm_model(tiny_hf_folder, tiny_registry, dtype, tol):
    """The packed forward re-implements ESM-2's layer: check it against EsmModel itself."""
    loaded = load_model("tiny_esm2", tiny_hf_folder, registry_file=tiny_registry, dtype=dtype)
    ref = EsmModel.from_pretrained(tiny_hf_folder, add_pooling_layer=False).eval()
    seqs = [p.sequence for p, _ in planted_proteins(5)] + ["MKV", "ACDEFGHIKLMNPQRSTVWYXBUZO"]
    enc = [loaded.alphabet.encode(s) for s in seqs]
    lengths = [len(e) for e in enc]
    cu = [0, *np.cumsum(lengths).tolist()]
    flat = torch.tensor([t for e in enc for t in e])
    positions = torch.cat([torch.arange(n) for n in lengths])
    tokens, mask = loaded.alphabet.batch(seqs)
    with torch.inference_mode():
        out = loaded.packed_encoder()(
            flat, torch.tensor(cu, dtype=torch.int32), cu, positions, max(lengths), [0, 1, 3]
        )
        hs = ref(input_ids=tokens, attention_mask=mask, output_hidden_states=True).hidden_states
    for layer in (0, 1, 3):
        for i in range(len(seqs)):
            a = out[layer][cu[i] : cu[i + 1]].float()
            b = hs[layer][i, : lengths[i]]
            assert float((a - b).norm() / b.norm()) < tol, (layer, i)


def test_packed_forward_handles_mask_tokens_like_hf(tiny):
    """Token dropout: a <mask> token zeroes its embedding and rescales that protein only."""
    seqs = ["MKTAYIAKQR", "ACDEFGHIK"]
    enc = [tiny.alphabet.encode(s) for s in seqs]
    enc[0][3] = tiny.alphabet.mask_id
    lengths = [len(e) for e in enc]
    cu = [0, *np.cumsum(lengths).tolist()]
    tokens = torch.full((2, max(lengths)), tiny.alphabet.pad_id)
    mask = torch.zeros_like(tokens)
    for r, e in enumerate(enc):
        tokens[r, : len(e)] = torch.tensor(e)
        mask[r, : len(e)] = 1
    with torch.inference_mode():
        ours = tiny.packed_encoder()(
            torch.tensor([t for e in enc for t in e]),
            torch.tensor(cu, dtype=torch.int32),
            cu,
            torch.cat([torch.arange(n) for n in lengths]),
            max(lengths),
            [2],
        )[2]
        ref = tiny.forward(tokens, mask, [2])[2]
    for r in range(2):
        assert torch.allclose(ours[cu[r] : cu[r + 1]], ref[r, : lengths[r]], atol=1e-5)


def test_projection_is_one_product_over_all_layers(tiny):
    cavs = [random_cav(f"c{i}", layer, 32, i) for i, layer in enumerate([1, 3, 1, 2])]
    proj = Projection.from_cavs(cavs, 32)
    assert proj.layers == [1, 2, 3] and tuple(proj.weight.shape) == (96, 4)
    states = {layer: torch.randn(2, 7, 32) for layer in (1, 2, 3)}
    scores = proj(states)
    for k, cav in enumerate(cavs):
        expect = cav.score_residues(states[cav.layer].numpy())
        assert np.allclose(scores[..., k].numpy(), expect, atol=1e-5)


@pytest.mark.parametrize("mode", ["padded", "packed"])
def test_engine_scores_equal_embedder_states_projected(tiny, mode):
    """Tiles, sorting and batching must not change a residue's score (also for tiled proteins)."""
    cavs = [random_cav("a", 1, 32, 3), random_cav("b", 3, 32, 4)]
    proteins = [p for p, _ in planted_proteins(6)] + [
        Protein("long", "".join(np.random.default_rng(5).choice(BACKGROUND, 150)))
    ]
    engine = ForwardEngine(
        tiny,
        projection=Projection.from_cavs(cavs, 32),
        toks_per_batch=200,
        window=64,
        tile_overlap=16,
        mode=mode,
    )
    got = dict(engine.score(proteins))
    emb = ForwardEngine(
        tiny, [1, 3], toks_per_batch=200, window=64, tile_overlap=16, mode="padded"
    )  # the Hugging Face modules as the reference
    index = {p.id: i for i, p in enumerate(proteins)}
    for p, states in emb.iter_residue_states(proteins):
        i = index[p.id]
        assert got[i].shape == (len(p.sequence), 2)
        for k, cav in enumerate(cavs):
            assert np.allclose(got[i][:, k], cav.score_residues(states[cav.layer]), atol=1e-4)


# ---------------------------------------------------------------------- scan results


def test_scan_finds_the_planted_spans_and_writes_every_output(tiny, planted, tmp_path):
    out = tmp_path / "scan"
    summary = run_scan(
        planted["fasta"],
        planted["lib"],
        out,
        loaded=tiny,
        toks_per_batch=300,
        chunk_proteins=5,
        progress=False,
    )
    assert summary["proteins"] == 12
    assert summary["residues"] == sum(len(p.sequence) for p, _ in planted["items"])
    for name in (*scan_mod.FILES, "summary.json", "checkpoint.json"):
        assert (out / name).is_file(), name
    found: dict[str, list[tuple[int, int]]] = {}
    for row in _read_tsv(out / "scan.tsv"):
        if row[5] == "trp_run":
            found.setdefault(row[0], []).append((int(row[1]), int(row[2])))
    for prot, runs in planted["items"]:
        assert found.get(prot.id, []) == runs, prot.id  # exactly the W runs, 1-based
    gff = (out / "scan.gff3").read_text().splitlines()
    assert gff[0] == "##gff-version 3"
    features = [line.split("\t") for line in gff if not line.startswith("#")]
    assert {f[2] for f in features} == {"polypeptide_region"}
    names = [dict(kv.split("=") for kv in f[8].split(";"))["Name"] for f in features]
    assert set(names) <= {"trp_run", "rand_a", "rand_b"}
    named = zip(features, names, strict=True)
    trp = [(f[0], int(f[3]), int(f[4])) for f, n in named if n == "trp_run"]
    assert trp == [(p.id, a, b) for p, runs in planted["items"] for a, b in runs]
    assert summary["concepts"]["trp_run"]["spans"] == sum(len(r) for _, r in planted["items"])
    header = (out / "proteins.tsv").read_text().splitlines()[0].split("\t")
    assert header[:2] == ["protein_id", "length"] and "trp_run:max_score" in header


def test_one_vs_ten_concepts_give_the_same_scores_and_spans(tiny, planted, tmp_path):
    trp = planted["cavs"][0]
    many = [trp] + [random_cav(f"r{i}", 1 + i % 3, 32, 10 + i) for i in range(9)]
    proteins = [p for p, _ in planted["items"]]
    one = dict(ForwardEngine(tiny, projection=Projection.from_cavs([trp], 32)).score(proteins))
    ten = dict(ForwardEngine(tiny, projection=Projection.from_cavs(many, 32)).score(proteins))
    for i in range(len(proteins)):
        assert ten[i].shape[1] == 10
        np.testing.assert_allclose(one[i][:, 0], ten[i][:, 0], atol=1e-5)
    lib1 = make_library(tmp_path / "lib1", tiny, [trp])
    lib10 = make_library(tmp_path / "lib10", tiny, many)
    run_scan(planted["fasta"], lib1, tmp_path / "s1", loaded=tiny, progress=False)
    run_scan(planted["fasta"], lib10, tmp_path / "s10", loaded=tiny, progress=False)
    rows1 = _read_tsv(tmp_path / "s1" / "scan.tsv")
    rows10 = [r for r in _read_tsv(tmp_path / "s10" / "scan.tsv") if r[5] == "trp_run"]
    assert rows1 == rows10 and rows1


def test_bfloat16_path_agrees_with_float32(tiny_hf_folder, tiny_registry, planted, tmp_path):
    """The GPU settings (bfloat16, packed rows) run on the CPU: same spans, close scores."""
    lib = load_library(planted["lib"])
    ref = load_scan_model(lib, model_path=tiny_hf_folder, registry_file=tiny_registry)
    bf16 = load_scan_model(
        lib, dtype="bfloat16", model_path=tiny_hf_folder, registry_file=tiny_registry
    )
    assert bf16.dtype == torch.bfloat16 and bf16.fingerprint == ref.fingerprint
    proteins = [p for p, _ in planted["items"]]
    proj = Projection.from_cavs(planted["cavs"], 32)
    want = dict(ForwardEngine(ref, projection=proj, mode="padded").score(proteins))
    for mode in ("packed", "padded"):
        got = dict(ForwardEngine(bf16, projection=proj, mode=mode).score(proteins))
        for i in range(len(proteins)):
            scale = np.abs(want[i]).max(axis=0) + 1e-3
            err = np.abs(got[i] - want[i]).max(axis=0) / scale
            assert (err < 0.05).all(), (mode, i, err)
    a = run_scan(
        planted["fasta"],
        planted["lib"],
        tmp_path / "f32",
        loaded=ref,
        engine="padded",
        progress=False,
    )
    b = run_scan(
        planted["fasta"],
        planted["lib"],
        tmp_path / "bf16",
        loaded=bf16,
        engine="packed",
        progress=False,
    )
    assert b["dtype"] == "bfloat16" and b["engine"] == "packed"
    trp_a = [r[:4] for r in _read_tsv(tmp_path / "f32" / "scan.tsv") if r[5] == "trp_run"]
    trp_b = [r[:4] for r in _read_tsv(tmp_path / "bf16" / "scan.tsv") if r[5] == "trp_run"]
    assert trp_a == trp_b and a["concepts"]["trp_run"] == b["concepts"]["trp_run"]


# ---------------------------------------------------------------------- resume and shards


def test_resume_after_a_kill_rescans_nothing_and_matches(tiny, planted, tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    run_scan(planted["fasta"], planted["lib"], whole, loaded=tiny, chunk_proteins=3, progress=False)

    out = tmp_path / "killed"
    real = scan_mod._write_checkpoint
    calls = {"n": 0}

    def dying(folder, state):
        calls["n"] += 1
        if calls["n"] == 4:  # chunks 1 and 2 committed; chunk 3's lines written, not committed
            raise KeyboardInterrupt
        real(folder, state)

    monkeypatch.setattr(scan_mod, "_write_checkpoint", dying)
    with pytest.raises(KeyboardInterrupt):
        run_scan(
            planted["fasta"], planted["lib"], out, loaded=tiny, chunk_proteins=3, progress=False
        )
    monkeypatch.setattr(scan_mod, "_write_checkpoint", real)
    state = json.loads((out / "checkpoint.json").read_text())
    assert state["chunks_done"] == 2 and not state["complete"]
    assert (out / "scan.tsv").stat().st_size > state["offsets"]["scan.tsv"]  # uncommitted tail

    scored: list[str] = []
    original = ForwardEngine.score

    def counting(self, proteins):
        scored.extend(p.id for p in proteins)
        return original(self, proteins)

    monkeypatch.setattr(ForwardEngine, "score", counting)
    summary = run_scan(
        planted["fasta"], planted["lib"], out, loaded=tiny, chunk_proteins=3, progress=False
    )
    assert scored == [f"prot{i}" for i in range(6, 12)]  # only the unfinished proteins
    assert summary["this_run"] == {
        "proteins": 6,
        "residues": summary["this_run"]["residues"],
        "resumed_from_chunk": 2,
    }
    assert summary["proteins"] == 12
    assert _digest(out) == _digest(whole)
    assert summary["concepts"] == json.loads((whole / "summary.json").read_text())["concepts"]

    scored.clear()  # a finished scan is not redone
    again = run_scan(
        planted["fasta"], planted["lib"], out, loaded=tiny, chunk_proteins=3, progress=False
    )
    assert again["already_complete"] and scored == []


def test_a_scan_folder_of_other_inputs_is_refused(tiny, planted, tmp_path):
    out = tmp_path / "s"
    run_scan(planted["fasta"], planted["lib"], out, loaded=tiny, progress=False)
    other = write_fasta(tmp_path / "other.fasta", [p for p, _ in planted["items"][:4]])
    with pytest.raises(ArtifactError, match="holds a scan with other inputs"):
        run_scan(other, planted["lib"], out, loaded=tiny, progress=False)


def test_shards_merge_into_the_whole_scan(tiny, planted, tmp_path):
    whole = tmp_path / "whole"
    run_scan(planted["fasta"], planted["lib"], whole, loaded=tiny, progress=False)
    out = tmp_path / "sharded"
    parts = [
        run_scan(planted["fasta"], planted["lib"], out, shard=f"{i}/3", loaded=tiny, progress=False)
        for i in (2, 0)
    ]
    assert parts[0]["records"] == [8, 12]
    with pytest.raises(ArtifactError, match="not finished"):
        merge_shards(out, 3)
    run_scan(planted["fasta"], planted["lib"], out, shard=(1, 3), loaded=tiny, progress=False)
    merged = merge_shards(out, 3)
    assert _digest(out) == _digest(whole)
    assert merged["proteins"] == 12
    assert merged["concepts"] == json.loads((whole / "summary.json").read_text())["concepts"]
    cmds = slurm_commands("p.fasta", "lib", "out", 3)
    assert '--shard "${SLURM_ARRAY_TASK_ID}/3"' in cmds["array"] and "--merge 3" in cmds["merge"]


# ---------------------------------------------------------------------- input and library checks


def test_bad_fasta_fails_before_anything_is_written(tiny, planted, tmp_path):
    bad = tmp_path / "bad.fasta"
    bad.write_text(">a\nMKV\n>b\nMK1V\n")
    with pytest.raises(InputError, match=r"bad.fasta:4: record 'b'.*'1'"):
        run_scan(bad, planted["lib"], tmp_path / "out", loaded=tiny, progress=False)
    assert not (tmp_path / "out" / "scan.gff3").exists()
    # a letter the reader accepts but the model has no token for (J): the same, before output
    off = tmp_path / "offalphabet.fasta"
    off.write_text(">a\nMKV\n>j\nMKJV\n")
    with pytest.raises(InputError, match=r"offalphabet.fasta: record 'j'.*'J'"):
        run_scan(off, planted["lib"], tmp_path / "out2", loaded=tiny, progress=False)
    assert not (tmp_path / "out2").exists()
    dup = tmp_path / "dup.fasta"
    dup.write_text(">a\nMKV\n>a\nMKV\n")
    with pytest.raises(InputError, match="duplicate record ID"):
        validate_fasta(dup)
    clean = tmp_path / "clean.fasta"
    clean.write_text(">sp|P1|X_HUMAN desc\nmkv*\n>b\nAC DE\n")
    assert validate_fasta(clean) == (2, 7)
    assert [p.id for p in iter_fasta(clean)] == ["P1", "b"]


def test_tampered_or_foreign_library_is_refused(
    tiny, tiny_mlm_folder, tiny_registry, planted, tmp_path
):
    import shutil

    lib = tmp_path / "lib"
    shutil.copytree(planted["lib"], lib)
    other = load_model("tiny_esm2", tiny_mlm_folder, registry_file=tiny_registry)
    with pytest.raises(ModelMismatchError, match="fingerprint"):
        run_scan(planted["fasta"], lib, tmp_path / "o", loaded=other, progress=False)
    entry = load_library(lib).concepts[0]
    path = entry.path
    path.write_bytes(path.read_bytes()[:-4] + b"\x00\x00\x00\x00")
    with pytest.raises(ArtifactError, match="sha256 does not match"):
        run_scan(planted["fasta"], lib, tmp_path / "o", loaded=tiny, progress=False)


def test_scan_loads_the_library_model_from_its_path(
    tiny_hf_folder, tiny_registry, planted, tmp_path
):
    summary = run_scan(
        planted["fasta"],
        planted["lib"],
        tmp_path / "o",
        model_path=tiny_hf_folder,
        registry_file=tiny_registry,
        progress=False,
    )
    assert summary["fingerprint"] == load_library(planted["lib"]).model["fingerprint"]


def test_scan_settings_are_the_cli_defaults_and_are_checked(planted, tiny, tmp_path):
    import inspect

    from esm_tcav.cli import scan as scan_cli
    from esm_tcav.config import ScanSettings

    defaults = ScanSettings()
    for where in (scan_cli, run_scan):
        params = inspect.signature(where).parameters
        for key in ("device", "toks_per_batch", "dtype", "model_path"):
            assert params[key].default == getattr(defaults, key), (where, key)
    with pytest.raises(ConfigError, match="key 'chunk_proteins'"):
        run_scan(planted["fasta"], planted["lib"], tmp_path / "o", chunk_proteins=0, loaded=tiny)
    with pytest.raises(ConfigError, match="key 'dtype'"):
        run_scan(planted["fasta"], planted["lib"], tmp_path / "o", dtype="int8", loaded=tiny)
    assert not (tmp_path / "o").exists()


def test_weak_concepts_are_left_out_unless_asked_and_grades_reach_the_outputs(
    tiny, planted, tmp_path
):
    model = {
        "name": tiny.spec.name,
        "fingerprint": tiny.fingerprint,
        "hidden_size": tiny.spec.hidden_size,
    }
    root = tmp_path / "lib"
    strong, weak = planted["cavs"][0], planted["cavs"][1]
    for cav, grade in ((strong, "strong"), (weak, "weak")):
        add_to_library(
            root,
            model,
            Concept(cav, threshold=0.0, min_span_length=4, merge_gap=1, metrics={"grade": grade}),
        )
    left = run_scan(planted["fasta"], root, tmp_path / "a", loaded=tiny, progress=False)
    assert list(left["concepts"]) == ["trp_run"]
    features = [
        line.split("\t")
        for line in (tmp_path / "a" / "scan.gff3").read_text().splitlines()
        if not line.startswith("#")
    ]
    assert features and all(f[8].endswith(";grade=strong") for f in features)
    assert all(row[-1] == "strong" for row in _read_tsv(tmp_path / "a" / "scan.tsv"))
    # the view of that scan shows what it scanned (it used to fail on the weak one's columns)
    from esm_tcav.run.scan_view import scan_view

    page = scan_view(tmp_path / "a", planted["fasta"], root, loaded=tiny).read_text()
    assert "trp_run" in page and "rand_a" not in page
    both = run_scan(
        planted["fasta"], root, tmp_path / "b", loaded=tiny, progress=False, include_weak=True
    )
    assert set(both["concepts"]) == {"trp_run", "rand_a"}
    rows = _read_tsv(tmp_path / "b" / "scan.tsv")
    assert {r[5]: r[-1] for r in rows}.get("rand_a", "weak") == "weak"
