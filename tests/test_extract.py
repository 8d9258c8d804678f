"""`esm-tcav extract` and `esm-tcav store export`: per-protein files that numpy or safetensors
read alone, equal to the model's states and to the store, in input order, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

from esm_tcav.cli import app
from esm_tcav.config import load_config
from esm_tcav.engine.export import file_stem
from esm_tcav.engine.forward import ForwardEngine
from esm_tcav.io.readers import read_fasta
from esm_tcav.models.loading import load_model
from esm_tcav.run.context import RunContext
from esm_tcav.run.pipeline import run_step
from tests.test_detect import write_config, write_planted_data

runner = CliRunner()


@pytest.fixture(scope="module")
def fasta(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("extract") / "in.fasta"
    rng = np.random.default_rng(3)
    aa = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    ids = ["zeta", "sp|P12345|ODD_HUMAN", "alpha", "weird/id:1"]
    path.write_text(
        "".join(f">{pid} x\n{''.join(rng.choice(aa, 20 + 7 * i))}\n" for i, pid in enumerate(ids))
    )
    return path


def _extract(model_dir, registry, fasta, out, *opts) -> dict:
    res = runner.invoke(
        app, ["extract", "tiny_esm2", str(fasta), str(out), "--model-path", str(model_dir),
              "--registry-file", str(registry), *opts],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return json.loads(res.output[res.output.index("{") :])


def test_extract_round_trip_in_input_order(tiny_hf_folder, tiny_registry, fasta, tmp_path):
    out = tmp_path / "emb"
    opts = ["--repr-layers", "0", "-1", "--include", "mean", "per_tok"]
    summary = _extract(tiny_hf_folder, tiny_registry, fasta, out, *opts)
    assert summary["layers"] == [0, 3] and summary["embedded"] == 4
    index = json.loads((out / "index.json").read_text())
    proteins = read_fasta(fasta)
    assert [r["id"] for r in index["proteins"]] == [p.id for p in proteins]  # input order
    assert index["proteins"][1]["id"] == "P12345"
    model = load_model("tiny_esm2", tiny_hf_folder, registry_file=tiny_registry)
    states = dict(ForwardEngine(model, [0, 3]).iter_residue_states(proteins))
    for row, protein in zip(index["proteins"], proteins, strict=True):
        arrays = load_file(out / row["file"])  # safetensors alone
        assert set(arrays) == {"per_tok.0", "per_tok.3", "mean.0", "mean.3"}
        for layer in (0, 3):
            np.testing.assert_array_equal(arrays[f"per_tok.{layer}"], states[protein][layer])
            np.testing.assert_allclose(
                arrays[f"mean.{layer}"], states[protein][layer].mean(0), rtol=1e-6
            )
            assert arrays[f"per_tok.{layer}"].shape == (protein.length, model.hidden_size)
    assert (out / f"{file_stem('weird/id:1')}.safetensors").is_file()
    # resumable: nothing is embedded twice; other layers are refused, not mixed in
    again = _extract(tiny_hf_folder, tiny_registry, fasta, out, *opts)
    assert again["embedded"] == 0 and again["skipped_already_done"] == 4
    res = runner.invoke(
        app, ["extract", "tiny_esm2", str(fasta), str(out), "--repr-layers", "1",
              "--model-path", str(tiny_hf_folder), "--registry-file", str(tiny_registry)],
    )  # fmt: skip
    assert res.exit_code == 2 and "another model, layers or format" in res.output


def test_extract_npy_files_load_with_numpy_alone(tiny_hf_folder, tiny_registry, fasta, tmp_path):
    out = tmp_path / "npy"
    _extract(tiny_hf_folder, tiny_registry, fasta, out, "--repr_layers", "2", "--format", "npy")
    index = json.loads((out / "index.json").read_text())
    first = index["proteins"][0]
    mean = np.load(out / f"{first['file']}.mean.L2.npy", allow_pickle=False)
    assert mean.shape == (32,) and mean.dtype == np.float32
    assert not list(out.glob("*.per_tok.*"))  # only what --include asked for (mean)
    tsv = (out / "index.tsv").read_text().splitlines()
    assert tsv[0] == "id\tfile\tlength" and len(tsv) == 5


def test_store_export_equals_the_store(tiny_hf_folder, tiny_registry, tmp_path):
    write_planted_data(tmp_path, n_pos=4, n_neg=4)
    cfg = write_config(tmp_path, tiny_hf_folder, tiny_registry)
    ctx = RunContext(load_config(cfg))
    run_step(ctx, "embed")
    out = tmp_path / "exported"
    res = runner.invoke(app, ["store", "export", str(cfg), "--out", str(out)])
    assert res.exit_code == 0, res.output
    index = json.loads((out / "index.json").read_text())
    store = ctx.store
    assert len(index["proteins"]) == len(ctx.dataset.proteins) == 8
    for row, protein in zip(index["proteins"], ctx.dataset.proteins, strict=True):
        arrays = load_file(out / row["file"])
        for layer in ctx.layers:
            np.testing.assert_array_equal(
                arrays[f"per_tok.{layer}"], store.residues(protein.seq_hash, layer)
            )
            np.testing.assert_array_equal(
                arrays[f"mean.{layer}"], store.mean(protein.seq_hash, layer)
            )
