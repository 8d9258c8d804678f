"""One embedding store shared by runs: each sequence embedded once, whatever the spans, the
config or the verb; token-sized shards that survive kill -9; span selections that cannot miss."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from esm_tcav.cli import app
from esm_tcav.config import config_from_dict
from esm_tcav.engine.embed import embed_into_store, open_store
from esm_tcav.engine.store import EmbeddingStore
from esm_tcav.errors import InputError
from esm_tcav.io.proteins import Protein, Span
from esm_tcav.io.readers import read_fasta, read_jsonl, select_spans
from esm_tcav.models.loading import load_model
from tests.test_detect import write_config, write_planted_data

ROOT = Path(__file__).resolve().parents[1]
AA = list("ACDEFGHIKLMNPQRSTVWY")


def _seqs(n: int, lo: int, hi: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(AA, int(rng.integers(lo, hi)))) for _ in range(n)]


def _rows(store_dir: Path) -> list[str]:
    """Sequence hashes of every stored row, over all shards (a sequence stored twice counts 2)."""
    rows: list[str] = []
    for index in sorted(store_dir.glob("*/shard-*/index.json")):
        rows += json.loads(index.read_text())["seq_hashes"]
    return rows


def _model_doc(tiny_hf_folder, tiny_registry) -> dict:
    return {
        "name": "tiny_esm2",
        "path": str(tiny_hf_folder),
        "registry_file": str(tiny_registry),
        "layers": [1, 3],
    }


# ---------------------------------------------------------------------- one store, many runs


def test_two_configs_share_one_store_and_spans_never_reembed(
    tmp_path, tiny_hf_folder, tiny_registry
):
    """The issue's case: a FASTA config, then a JSONL config on the same sequences (now with
    spans, other IDs, another output folder): the second embeds nothing."""
    seqs = _seqs(12, 30, 60)
    store = tmp_path / "store"
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    (tmp_path / "a" / "pos.fasta").write_text("".join(f">P{i}\n{s}\n" for i, s in enumerate(seqs)))
    (tmp_path / "b" / "pos.jsonl").write_text(
        "".join(
            json.dumps(
                {
                    "accession": f"other{i}",
                    "sequence": s,
                    "ground_truth_annotations": [
                        {"motif_id": "PF0001", "name": "zf", "start": 3, "end": 12}
                    ],
                }
            )
            + "\n"
            for i, s in enumerate(seqs[:6])
        )
    )
    negs = "".join(f">N{i}\n{s}\n" for i, s in enumerate(seqs[6:]))
    docs = {}
    for name, pos in (("a", "pos.fasta"), ("b", "pos.jsonl")):
        (tmp_path / name / "neg.fasta").write_text(negs)
        doc = {
            "output_dir": "out",
            "model": _model_doc(tiny_hf_folder, tiny_registry),
            "embed": {"shard_residues": 150},
            "data": {"positives": pos, "negatives": "neg.fasta"},
        }
        if name == "a":
            doc["store"] = {"path": "../store"}  # config key, relative to the config file
        docs[name] = tmp_path / name / "run.yaml"
        docs[name].write_text(yaml.safe_dump(doc))
    runner = CliRunner()
    first = runner.invoke(app, ["embed", str(docs["a"])])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["embedded_now"] == 12
    n_shards = len(list(store.glob("*/shard-*")))
    assert n_shards > 3  # ~2,700 residues in shards of <= 150 residues (a protein is <= 60)
    second = runner.invoke(app, ["embed", str(docs["b"]), "--store", str(store)])
    assert second.exit_code == 0, second.output
    out = json.loads(second.stdout)
    assert out["embedded_now"] == 0 and out["reused"] == 12
    rows = _rows(store)
    assert len(rows) == len(set(rows)) == 12  # counted: each sequence stored once
    assert len(list(store.glob("*/shard-*"))) == n_shards
    assert not (tmp_path / "a" / "out" / "embeddings").exists()
    assert not (tmp_path / "b" / "out" / "embeddings").exists()
    # the span is pooled from the stored residues (it was never stored as a span row)
    loaded = load_model("tiny_esm2", tiny_hf_folder, registry_file=tiny_registry)
    st = EmbeddingStore(store, loaded.fingerprint)
    p = read_jsonl(tmp_path / "b" / "pos.jsonl")[0]
    assert np.allclose(
        st.span(p.seq_hash, 3, 3, 12, "zf"), st.residues(p.seq_hash, 3)[2:12].mean(0)
    )
    # every run prints the granularity it trains with and its positive spans
    assert "granularity residue" in second.stderr and "6 positive spans in 6 of 6" in second.stderr
    assert "granularity protein" in first.stderr


def test_shard_proteins_still_works_with_a_warning(tmp_path, tiny_hf_folder, tiny_registry, caplog):
    cfg = config_from_dict(
        {
            "model": _model_doc(tiny_hf_folder, tiny_registry),
            "embed": {"shard_proteins": 2},
            "data": {"positives": "p", "negatives": "n"},
        },
        base_dir=tmp_path,
    )
    loaded = load_model("tiny_esm2", tiny_hf_folder, registry_file=tiny_registry)
    store = open_store(cfg, loaded)
    prots = [Protein(f"x{i}", s) for i, s in enumerate(_seqs(5, 20, 30))]
    with caplog.at_level("WARNING"):
        assert embed_into_store(cfg, loaded, prots, [1, 3], store) == 5
    assert [len(json.loads(i.read_text())["seq_hashes"]) for i in store.root.glob("*/index.json")]
    assert sorted(
        len(json.loads(i.read_text())["seq_hashes"]) for i in store.root.glob("*/index.json")
    ) == [1, 2, 2]
    import esm_tcav.engine.embed as embed_mod

    assert embed_mod._warned  # said once per process (maybe by an earlier test)


# ---------------------------------------------------------------------- detect --input


def test_detect_input_on_stored_proteins_embeds_nothing(tmp_path, tiny_hf_folder, tiny_registry):
    from esm_tcav.concepts.train import run_train
    from esm_tcav.config import load_config
    from esm_tcav.run.context import RunContext

    write_planted_data(tmp_path)
    cfg_path = write_config(
        tmp_path, tiny_hf_folder, tiny_registry, store={"path": "shared"}, detect={"layer": 1}
    )
    run_train(RunContext(load_config(cfg_path)))
    store = tmp_path / "shared"
    before = sorted(p.name for p in store.glob("*/shard-*"))
    stored = read_jsonl(tmp_path / "pos.jsonl")[:5] + read_fasta(tmp_path / "neg.fasta")[:3]
    lines = [
        json.dumps(
            {
                "accession": f"again_{p.id}",
                "sequence": p.sequence,
                "ground_truth_annotations": [
                    {"motif_id": "M", "name": "motif", "start": s.start, "end": s.end}
                    for s in p.spans
                ],
            }
        )
        for p in stored
    ]
    (tmp_path / "input.jsonl").write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(
        app, ["detect", str(cfg_path), "--input", str(tmp_path / "input.jsonl")]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["embedded_now"] == 0 and out["states_from"] == "store" and out["proteins"] == 8
    assert sorted(p.name for p in store.glob("*/shard-*")) == before  # nothing written
    # one new protein: by default scored from the forward pass, and the store does not grow
    (tmp_path / "new.fasta").write_text(
        f">fresh\nMKLVCWHCHWCYHWCHPQRSTVADEGIK\n>{stored[5].id}\n{stored[5].sequence}\n"
    )
    new = ["detect", str(cfg_path), "--input", str(tmp_path / "new.fasta")]
    res = CliRunner().invoke(app, new)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["states_from"] == "forward pass"
    assert sorted(p.name for p in store.glob("*/shard-*")) == before
    # store.keep_inputs: exactly the new one is embedded into the store
    res = CliRunner().invoke(app, [*new, "--set", "store.keep_inputs=true"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["embedded_now"] == 1
    assert len(list(store.glob("*/shard-*"))) == len(before) + 1


# ---------------------------------------------------------------------- scan --store


def test_scan_scores_stored_proteins_from_the_store(tmp_path, tiny_hf_folder, tiny_registry):
    from esm_tcav.engine.forward import ForwardEngine
    from esm_tcav.localize.scan import run_scan
    from tests.test_scan import make_library, planted_cav, planted_proteins, random_cav, write_fasta

    tiny = load_model("tiny_esm2", tiny_hf_folder, registry_file=tiny_registry)
    cavs = [planted_cav(tiny, 3), random_cav("rand_a", 1, 32, 1)]
    lib = make_library(tmp_path / "lib", tiny, cavs)
    prots = [p for p, _ in planted_proteins(10)]
    fasta = write_fasta(tmp_path / "p.fasta", prots)
    store = EmbeddingStore(tmp_path / "store", tiny.fingerprint, residue_dtype="float32")
    store.write_shard(list(ForwardEngine(tiny, [1, 2, 3]).iter_residue_states(prots[:6])))
    kw = dict(loaded=tiny, toks_per_batch=300, chunk_proteins=4, progress=False)
    plain = run_scan(fasta, lib, tmp_path / "plain", **kw)
    shared = run_scan(fasta, lib, tmp_path / "shared", store=tmp_path / "store", **kw)
    assert "scored_from_store" not in plain["this_run"]
    assert shared["this_run"]["scored_from_store"] == 6
    assert (tmp_path / "shared" / "scan.tsv").read_text() == (
        tmp_path / "plain" / "scan.tsv"
    ).read_text()


# ---------------------------------------------------------------------- writers in processes

_WRITER = """
import json, sys, time
from pathlib import Path
from esm_tcav.config import config_from_dict
from esm_tcav.engine.embed import embed_into_store, open_store
from esm_tcav.io.readers import read_fasta
from esm_tcav.models.loading import load_model

doc, fasta, go, delay = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
cfg = config_from_dict(doc)
m = doc["model"]
loaded = load_model(m["name"], m["path"], registry_file=m["registry_file"])
store = open_store(cfg, loaded)
proteins = read_fasta(fasta)
print("ready", flush=True)
while go != "-" and not Path(go).exists():
    time.sleep(0.01)
total = 0
def progress(n, residues):
    global total
    total += residues
    print("residues", total, flush=True)
    time.sleep(delay)
done = embed_into_store(cfg, loaded, proteins, m["layers"], store, progress=progress)
print("done", done, flush=True)
"""


def _writer(tmp_path, doc, fasta, go="-", delay=0.0) -> subprocess.Popen:
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen(
        [sys.executable, str(script), json.dumps(doc), str(fasta), str(go), str(delay)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )


def _store_doc(tmp_path, tiny_hf_folder, tiny_registry, shard_residues: int) -> dict:
    return {
        "output_dir": str(tmp_path / "out"),
        "model": _model_doc(tiny_hf_folder, tiny_registry),
        "store": {"path": str(tmp_path / "store")},
        "embed": {"shard_residues": shard_residues, "residue_dtype": "float32"},
        "data": {"positives": "p", "negatives": "n"},
    }


def test_kill_9_in_a_large_first_shard_loses_at_most_one_shard(
    tmp_path, tiny_hf_folder, tiny_registry
):
    """200 proteins (~26 k residues): shards counted in proteins (256 each) would have kept
    nothing; shards of 2,000 residues keep all but the one being filled."""
    seqs = _seqs(200, 60, 200, seed=3)
    fasta = tmp_path / "big.fasta"
    fasta.write_text("".join(f">B{i}\n{s}\n" for i, s in enumerate(seqs)))
    total = sum(map(len, seqs))
    budget = 2000
    doc = _store_doc(tmp_path, tiny_hf_folder, tiny_registry, budget)
    proc = _writer(tmp_path, doc, fasta, delay=0.015)
    reported = 0
    try:
        for line in proc.stdout:
            if line.startswith("residues"):
                reported = int(line.split()[1])
                if reported >= 0.4 * total:
                    break
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    loaded = load_model("tiny_esm2", tiny_hf_folder, registry_file=tiny_registry)
    cfg = config_from_dict(doc)
    store = open_store(cfg, loaded)
    kept = store.residues_stored()
    assert reported - budget <= kept < total, (reported, kept, total)
    for h in {h for h, _ in store._index}:  # every published shard is whole and readable
        assert store.residues(h, 3).shape[1] == loaded.spec.hidden_size
    assert list((store.root / "claims").iterdir())  # and its claims
    proteins = read_fasta(fasta)
    missing = store.missing(proteins, [1, 3], residues=True)
    done = embed_into_store(cfg, loaded, proteins, [1, 3], store)
    assert done == len(missing) == 200 - store.proteins_stored() + done
    assert store.residues_stored() == total and not store.missing(proteins, [1, 3], True)
    assert not list(store.root.glob("shard-*.tmp-*"))  # a dead writer's leftovers are removed
    assert not list((store.root / "claims").iterdir())


def test_concurrent_writers_embed_each_sequence_once(tmp_path, tiny_hf_folder, tiny_registry):
    seqs = _seqs(60, 40, 120, seed=4)
    fasta = tmp_path / "p.fasta"
    fasta.write_text("".join(f">C{i}\n{s}\n" for i, s in enumerate(seqs)))
    doc = _store_doc(tmp_path, tiny_hf_folder, tiny_registry, 600)
    go = tmp_path / "go"
    procs = [_writer(tmp_path, doc, fasta, go=go, delay=0.02) for _ in range(2)]
    for p in procs:
        assert p.stdout.readline().strip() == "ready"
    go.write_text("")
    done = []
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0
        done.append(int(out.strip().splitlines()[-1].split()[1]))
    rows = _rows(tmp_path / "store")
    assert len(rows) == len(set(rows)) == 60  # counted: no sequence embedded twice
    assert sum(done) == 60 and min(done) > 0  # and both writers did part of the work


# ---------------------------------------------------------------------- span selection


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _record(i: int, anns: list[tuple[str, str]], target: str | None = None) -> dict:
    rec = {
        "accession": f"P{i}",
        "sequence": "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQ",
        "ground_truth_annotations": [
            {"motif_id": m, "name": n, "start": 2 + 5 * k, "end": 6 + 5 * k}
            for k, (m, n) in enumerate(anns)
        ],
    }
    if target:
        rec["target_motif"] = target
    return rec


def test_span_selection_by_name_or_motif_id(tmp_path):
    path = _jsonl(
        tmp_path / "p.jsonl",
        [_record(i, [("PF01650", "Peptidase_C13"), ("PF00096", "zf-C2H2")]) for i in range(5)],
    )
    prots = read_jsonl(path)
    by_id = select_spans(prots, ["PF01650"], path, 4)
    by_name = select_spans(prots, ["Peptidase_C13"], path, 4)
    assert by_id == by_name
    assert all([s.name for s in p.spans] == ["Peptidase_C13"] for p in by_id)
    assert all(len(p.spans) == 2 for p in select_spans(prots, None, path, 4))


def test_selection_matching_nothing_or_too_few_is_an_error_naming_what_occurs(tmp_path):
    records = [_record(i, [("PF00096", "zf-C2H2")] * 2) for i in range(6)]
    records += [_record(10 + i, [("PF00001", f"other{i}")]) for i in range(6)]
    records[0]["ground_truth_annotations"].append(
        {"motif_id": "PF07654", "name": "C1-set", "start": 20, "end": 25}
    )
    path = _jsonl(tmp_path / "pos.jsonl", records)
    prots = read_jsonl(path)
    with pytest.raises(InputError) as err:
        select_spans(prots, ["PF99999"], path, 4)
    msg = str(err.value)
    assert str(path) in msg and "PF99999" in msg and "in 0 protein(s)" in msg
    assert "zf-C2H2 (PF00096, 12)" in msg.split("occur")[1]
    assert msg.count("(PF0") == 5  # the five most common names, not all seven
    with pytest.raises(InputError, match=r"C1-set.*in 1 protein\(s\), fewer than the 4 needed"):
        select_spans(prots, ["C1-set"], path, 4)
    assert sum(bool(p.spans) for p in select_spans(prots, ["C1-set"], path, 1)) == 1


def test_target_motif_is_the_concept_unless_span_names_say_otherwise(tmp_path):
    pairs = [("PF00096", "zf-C2H2"), ("PF00001", "7tm_1")]
    path = _jsonl(tmp_path / "p.jsonl", [_record(i, pairs, target="PF00096") for i in range(4)])
    prots = read_jsonl(path)
    chosen = select_spans(prots, None, path, 4)
    assert {s.name for p in chosen for s in p.spans} == {"zf-C2H2"}
    assert {s.name for p in select_spans(prots, ["7tm_1"], path, 4) for s in p.spans} == {"7tm_1"}
    nothing = _jsonl(tmp_path / "q.jsonl", [_record(i, pairs, target="PF123") for i in range(4)])
    with pytest.raises(InputError, match="target_motif selects spans in 0"):
        select_spans(read_jsonl(nothing), None, nothing, 4)


def test_a_run_whose_selection_misses_fails_with_one_line(tmp_path, tiny_hf_folder, tiny_registry):
    write_planted_data(tmp_path)
    cfg = write_config(tmp_path, tiny_hf_folder, tiny_registry, data={"span_names": ["PF01650"]})
    res = CliRunner().invoke(app, ["embed", str(cfg)])
    assert res.exit_code == 2
    line = res.stderr.strip().splitlines()[-1]
    assert "pos.jsonl" in line and "PF01650" in line and "motif (M, " in line
    assert not (tmp_path / "out" / "embeddings").exists()
    cfg = write_config(tmp_path, tiny_hf_folder, tiny_registry, data={"span_names": ["M"]})
    res = CliRunner().invoke(app, ["embed", str(cfg)])  # the motif_id selects it
    assert res.exit_code == 0, res.output


def test_span_pooling_ignores_the_span_name(tmp_path, tiny_hf_folder, tiny_registry):
    from esm_tcav.engine.forward import ForwardEngine

    loaded = load_model("tiny_esm2", tiny_hf_folder, registry_file=tiny_registry)
    p = Protein("a", "MKTAYIAKQRQISFVKSHFSRQ", (Span(3, 9, "x"),))
    store = EmbeddingStore(tmp_path, loaded.fingerprint, residue_dtype="float32")
    store.write_shard(list(ForwardEngine(loaded, [1]).iter_residue_states([p])))
    renamed = Protein("b", p.sequence, (Span(3, 9, "y"), Span(1, 4, "z")))
    assert store.missing([renamed], [1], residues=True) == []
    assert store.missing([renamed], [1], residues=False) == []  # residues are stored
    assert np.allclose(store.span(p.seq_hash, 1, 3, 9, "y"), store.span(p.seq_hash, 1, 3, 9, "x"))


# ---------------------------------------------------------------------- libraries and SLURM


def test_library_build_and_a_run_share_the_store(tmp_path, tiny_hf_folder, tiny_registry):
    from tests.test_library import DEFAULTS, model_section, write_sources

    write_sources(tmp_path)
    lib_cfg = tmp_path / "library.yaml"
    data = {"positives": "pos.jsonl", "negatives": "neg.fasta", "test_fraction": 0.35}
    lib_cfg.write_text(
        yaml.safe_dump(
            {
                "model": model_section(tiny_hf_folder, tiny_registry),
                "defaults": DEFAULTS,
                "concepts": [{"name": "motif", "data": data}],
            }
        )
    )
    store = tmp_path / "store"
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["library", "build", str(lib_cfg), "--out", str(tmp_path / "lib"), "--store", str(store)],
    )
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "lib" / "work" / "embeddings").exists()
    n_rows = len(_rows(store))
    assert n_rows == 28  # 14 positives + 14 negatives, each once
    run_cfg = tmp_path / "run.yaml"
    run_cfg.write_text(
        yaml.safe_dump(
            {
                "output_dir": "out",
                "model": model_section(tiny_hf_folder, tiny_registry),
                "embed": {"residue_dtype": "float32"},
                "data": data,
            }
        )
    )
    res = runner.invoke(app, ["embed", str(run_cfg), "--store", str(store)])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["embedded_now"] == 0 and len(_rows(store)) == n_rows


def test_library_build_embeds_the_union_of_its_concepts_in_one_pass(
    tmp_path, tiny_hf_folder, tiny_registry
):
    """Two concepts with disjoint proteins: concept by concept would write one shard each; one
    pass over the union writes one shard holding every sequence once."""
    from tests.test_library import DEFAULTS, model_section, write_sources

    write_sources(tmp_path)
    shifted = []
    for line in (tmp_path / "pos.jsonl").read_text().splitlines():
        rec = json.loads(line)
        rec["accession"], rec["sequence"] = "g" + rec["accession"], "G" + rec["sequence"]
        for a in rec["ground_truth_annotations"]:
            a["start"], a["end"] = a["start"] + 1, a["end"] + 1
        shifted.append(json.dumps(rec))
    (tmp_path / "pos2.jsonl").write_text("\n".join(shifted) + "\n")
    neg = read_fasta(tmp_path / "neg.fasta")
    (tmp_path / "neg2.fasta").write_text("".join(f">g{p.id}\nG{p.sequence}\n" for p in neg))
    lib_cfg = tmp_path / "library.yaml"
    concepts = [
        {"name": name, "data": {"positives": pos, "negatives": negs, "test_fraction": 0.35}}
        for name, pos, negs in (("a", "pos.jsonl", "neg.fasta"), ("b", "pos2.jsonl", "neg2.fasta"))
    ]
    lib_cfg.write_text(
        yaml.safe_dump(
            {
                "model": model_section(tiny_hf_folder, tiny_registry),
                "defaults": DEFAULTS,
                "concepts": concepts,
            }
        )
    )
    store = tmp_path / "store"
    res = CliRunner().invoke(
        app,
        ["library", "build", str(lib_cfg), "--out", str(tmp_path / "lib"), "--store", str(store)],
    )
    assert res.exit_code == 0, res.output
    rows = _rows(store)
    assert len(rows) == len(set(rows)) == 56  # 2 x (14 positives + 14 negatives), each once
    assert len(list(store.glob("*/shard-*"))) == 1


def test_slurm_jobs_carry_the_store(tmp_path, tiny_hf_folder, tiny_registry):
    from esm_tcav.config import load_config
    from esm_tcav.run.slurm import write_scan_scripts, write_scripts

    write_planted_data(tmp_path)
    cfg_path = write_config(tmp_path, tiny_hf_folder, tiny_registry, store={"path": "shared"})
    cfg = load_config(cfg_path)
    for name, path in write_scripts(cfg, cfg_path).items():
        assert f"--store {tmp_path / 'shared'}" in path.read_text(), name
    scan = write_scan_scripts(
        cfg, tmp_path / "p.fasta", tmp_path / "lib", tmp_path / "scan", store=tmp_path / "st"
    )
    assert all(f"--store {tmp_path / 'st'}" in p.read_text() for p in scan.values())
