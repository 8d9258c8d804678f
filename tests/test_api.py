"""The notebook API (`esm_tcav.Concept`): load, score, detect in input order, one model load;
the same spans as `esm-tcav scan`; the README example runs."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import esm_tcav
from esm_tcav.errors import ArtifactError, ConfigError
from esm_tcav.localize.scan import run_scan
from esm_tcav.run import api
from tests.test_detect import trained as trained  # noqa: F401 (a fixture)
from tests.test_scan import make_library, planted_cav, planted_proteins, random_cav, write_fasta

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def setup(tiny, tiny_hf_folder, tiny_registry, tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    cavs = [planted_cav(tiny, 3), random_cav("rand_a", 1, 32, 1)]
    lib = make_library(root / "lib", tiny, cavs, trp_run={"smoothing": 3, "threshold": 0.0})
    items = planted_proteins(9, seed=4)
    fasta = write_fasta(root / "p.fasta", [p for p, _ in items])
    run_scan(fasta, lib, root / "scan", loaded=tiny, progress=False)
    paths = {"model_path": tiny_hf_folder, "registry_file": tiny_registry}
    return {"lib": lib, "items": items, "scan": root / "scan", "paths": paths}


def _scan_spans(folder: Path, concept: str) -> dict[str, list[tuple[int, int]]]:
    found: dict[str, list[tuple[int, int]]] = {}
    for line in (folder / "scan.tsv").read_text().splitlines()[1:]:
        row = line.split("\t")
        if row[5] == concept:
            found.setdefault(row[0], []).append((int(row[1]), int(row[2])))
    return found


def test_detect_matches_the_scan_in_input_order(setup):
    concept = esm_tcav.Concept.load(setup["lib"], "trp_run", **setup["paths"])
    assert isinstance(concept, esm_tcav.ConceptArtifact) and concept.smoothing_window == 3
    proteins = [p for p, _ in setup["items"]]
    reversed_seqs = [p.sequence for p in reversed(proteins)]  # order must follow the input
    spans = concept.detect(reversed_seqs)
    scan = _scan_spans(setup["scan"], "trp_run")
    for prot, found in zip(reversed(proteins), spans, strict=True):
        assert [(s.start, s.end) for s in found] == scan.get(prot.id, [])
    assert sum(len(s) for s in spans) > 0


def test_scores_have_one_value_per_residue_and_one_model_load(setup):
    a = esm_tcav.Concept.load(setup["lib"], "trp_run", **setup["paths"])
    b = esm_tcav.Concept.load(setup["lib"], "rand_a", **setup["paths"])
    scores = a.score(["MKWWWWWWWWAGLK", ("mine", "acdefgh*")])
    assert [s.shape for s in scores] == [(14,), (7,)]
    assert scores[0].dtype == np.float32
    b.score("MKV")
    assert a.model() is b.model()  # the model was loaded once and shared
    assert scores[0][3:9].mean() > scores[0][[0, 1, 11, 12]].mean()  # the W run scores high


def test_a_library_of_several_concepts_needs_a_name(setup):
    with pytest.raises(ConfigError, match="name one"):
        esm_tcav.Concept.load(setup["lib"])
    assert esm_tcav.Concept.in_library(setup["lib"]) == ["trp_run", "rand_a"]


def test_a_folder_that_is_no_concept_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="neither a concept library"):
        esm_tcav.Concept.load(tmp_path)


def test_another_model_is_refused(setup, tiny):
    concept = esm_tcav.Concept.load(setup["lib"], "trp_run", **setup["paths"])
    concept.fingerprint = "0" * 16
    with pytest.raises(ArtifactError, match="trained on model"):
        concept.use_model(tiny)


def test_the_readme_example_runs(setup, monkeypatch):
    text = README.read_text()
    section = text[text.index("## Python API") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.setattr(api, "_MODELS", {})
    namespace: dict = {}
    code = code.replace('"results/library"', repr(str(setup["lib"])))
    paths = {k: str(v) for k, v in setup["paths"].items()}
    code = code.replace('name="C2H2_zinc_finger"', f'name="trp_run", **{paths!r}')
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    assert len(namespace["spans"]) == 2 and namespace["spans"][0]


def test_an_artifact_folder_detects_what_esm_tcav_detect_writes(trained, tmp_path):  # noqa: F811
    from esm_tcav.run.pipeline import run_step
    from tests.test_detect import MOTIF, ctx_for

    fasta = tmp_path / "new.fasta"
    seqs = [f"MKLV{MOTIF}PQRSTVADKLMNPQ", "MKLVPQRSTVADEGIKAAGLK", f"{MOTIF}AAGLKMKLVPQRS"]
    fasta.write_text("".join(f">s{i}\n{s}\n" for i, s in enumerate(seqs)))
    result = run_step(ctx_for(trained, **{"detect.layer": 1}), "detect", input_path=fasta)
    out = Path(result["output"])
    written: dict[str, list[tuple[int, int]]] = {}
    for line in (out / "spans.tsv").read_text().splitlines()[1:]:
        cells = line.split("\t")
        written.setdefault(cells[0], []).append((int(cells[1]), int(cells[2])))
    artifact = next((out.parents[3] / "cavs" / "tiny_esm2").glob("L1_concept_v*"))
    concept = esm_tcav.Concept.load(artifact)  # model path and span rule from the run
    assert concept.smoothing_window == 3 and concept.min_span_length == 5
    # a notebook shows one line, not the numbers of every random CAV
    shown = repr(concept)
    assert "\n" not in shown and len(shown) < 200 and "layer=1" in shown
    found = concept.detect(seqs)
    assert [[(s.start, s.end) for s in f] for f in found] == [
        written.get(f"s{i}", []) for i in range(3)
    ]
    assert found[0] and found[2]
