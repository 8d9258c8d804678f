"""A backend of another architecture, added with one module and one registry entry, runs it all.

`tests/tiny_backend.py` implements `ProteinLM` for a tiny BERT-like encoder (its own vocabulary,
no packed forward, a classification head on [CLS]); the registry YAML written here names it by
import path. The whole `esm-tcav run` (embed, train, evaluate, detect, tcav, report) must work
on it without a change to the package.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from esm_tcav.engine.forward import ForwardEngine
from esm_tcav.errors import ConfigError, InputError
from esm_tcav.io.proteins import Protein
from esm_tcav.models.base import ProteinLM
from esm_tcav.models.loading import load_model

from .test_pipeline import _invoke, write_planted_run


@pytest.fixture(scope="module")
def tiny_bert_registry(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bert_registry") / "registry.yaml"
    entry = {
        "backend": "tests.tiny_backend",
        "hidden_size": 24,
        "num_layers": 3,
        "num_heads": 4,
        "default_taps": [1, 2, 3],
        "max_tokens": 1024,
        "source": {"seed": 3},
        "description": "tiny random BERT-like test model",
    }
    path.write_text(yaml.safe_dump({"models": {"tiny_bert": entry}}))
    return path


def test_registry_backend_loads_the_users_module(tiny_bert_registry):
    m = load_model("tiny_bert", registry_file=tiny_bert_registry)
    assert isinstance(m, ProteinLM) and type(m).__module__ == "tests.tiny_backend"
    assert (m.hidden_size, m.num_layers, m.residue_offset) == (24, 3, 1)
    assert len(m.alphabet.vocab) == 30 and not m.supports_packed
    again = load_model("tiny_bert", registry_file=tiny_bert_registry)
    assert again.fingerprint == m.fingerprint


def test_unknown_backend_is_a_clear_error(tmp_path):
    reg = tmp_path / "r.yaml"
    entry = {"backend": "no_such_pkg.mod", "hidden_size": 8, "num_layers": 1, "default_taps": [1]}
    reg.write_text(yaml.safe_dump({"models": {"x": entry}}))
    with pytest.raises(ConfigError, match="cannot import no_such_pkg.mod"):
        load_model("x", registry_file=reg)


def test_engine_states_equal_the_backends_own_forward(tiny_bert_registry, tmp_path):
    m = load_model("tiny_bert", registry_file=tiny_bert_registry)
    seqs = ["MKTAYIAKQRQISFVKSHFSRQ", "MKV", "ACDEFGHIKLMNPQRSTVWYXBUZO"]
    prots = [Protein(f"p{i}", s) for i, s in enumerate(seqs)]
    engine = ForwardEngine(m, [1, 3], log_dir=tmp_path)
    assert engine.mode == "padded"  # auto falls back: this backend has no packed forward
    got = {p.id: s for p, s in engine.iter_residue_states(prots)}
    for p in prots:
        tokens, mask = m.alphabet.batch([p.sequence])
        with torch.inference_mode():
            ref = m.forward(tokens, mask, [3])[3][0, 1 : 1 + len(p.sequence)].numpy()
        assert np.abs(got[p.id][3] - ref).max() < 1e-4
    assert not (tmp_path / "indexing_corrections.jsonl").exists()
    with pytest.raises(ConfigError, match="no packed forward"):
        ForwardEngine(m, [1], mode="packed")


def test_residue_without_a_token_is_refused(tiny_bert_registry):
    m = load_model("tiny_bert", registry_file=tiny_bert_registry)
    with pytest.raises(InputError, match="'J' is not in the tiny alphabet"):
        m.check_sequence("MKJ", "protein 'x'")


def test_whole_run_on_another_architecture(tmp_path, tiny_hf_folder, tiny_bert_registry):
    model = {"name": "tiny_bert", "path": None, "registry_file": str(tiny_bert_registry)}
    cfg = write_planted_run(tmp_path, tiny_hf_folder, tiny_bert_registry, model=model)
    result = _invoke("run", str(cfg), "--json")
    assert result.exit_code == 0, result.output
    steps = json.loads(result.stdout)["steps"]
    assert list(steps) == ["embed", "train", "evaluate", "detect", "tcav", "report"]
    out = tmp_path / "out"
    assert (out / "cavs" / "tiny_bert" / "summary_v1.json").is_file()
    tcav = json.loads((out / "tcav" / "tiny_bert" / "tcav_scores.json").read_text())
    assert tcav["target"]["kind"] == "sequence_classification"
    assert set(tcav["layers"]) == {"1", "2", "3"}
    assert (out / "report.html").is_file()
