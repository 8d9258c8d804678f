"""`esm-tcav paint`: scores into a real structure's B-factors (PDB 1A8O, tests/data/structures),
read back equal; the alignment reports mismatches and unmodelled residues; viewer files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

gemmi = pytest.importorskip("gemmi")

from esm_tcav.cli import app  # noqa: E402
from esm_tcav.concepts.concept import Concept as Record  # noqa: E402
from esm_tcav.concepts.library import add_to_library  # noqa: E402
from esm_tcav.errors import InputError  # noqa: E402
from esm_tcav.io.structures import align_chain, read_chain  # noqa: E402
from esm_tcav.models.loading import load_model  # noqa: E402
from esm_tcav.run.api import Concept  # noqa: E402
from esm_tcav.run.paint import paint_structure  # noqa: E402
from tests.test_scan import random_cav  # noqa: E402

STRUCT = Path(__file__).parent / "data" / "structures"
SEQ_1A8O = "MDIRQGPKEPFRDYVDRFYKTLRAEQASQEVKNWMTETLLVQNANPDCKTILKALGPGATLEEMMTACQG"


@pytest.fixture(scope="module")
def library(tiny_hf_folder, tiny_registry, tmp_path_factory):
    tiny = load_model("tiny_esm2", tiny_hf_folder, registry_file=tiny_registry)
    model = {
        "name": tiny.spec.name,
        "fingerprint": tiny.fingerprint,
        "hidden_size": tiny.spec.hidden_size,
        "path": str(tiny_hf_folder),
        "registry_file": str(tiny_registry),
    }
    root = tmp_path_factory.mktemp("paintlib") / "lib"
    cav = random_cav("probe", 2, 32, 7)
    add_to_library(root, model, Record(cav, threshold=0.0, min_span_length=3))
    return root


def _bfactors(path: Path, chain: str = "A") -> list[list[float]]:
    st = gemmi.read_structure(str(path))
    return [[a.b_iso for a in r] for r in st[0][chain].get_polymer()]


def test_chain_sequence_reads_modified_residues_as_their_parent():
    chain = read_chain(STRUCT / "1A8O.pdb", "A")
    assert chain.sequence == SEQ_1A8O and chain.labels[0] == "151" and len(chain.labels) == 70
    assert [m[1:] for m in chain.modified] == [("MSE", "M")] * 4
    assert read_chain(STRUCT / "1A8O.cif", "A").sequence == SEQ_1A8O
    with pytest.raises(InputError, match="no chain 'B'"):
        read_chain(STRUCT / "1A8O.pdb", "B")


@pytest.mark.parametrize("name", ["1A8O.pdb", "1A8O.cif"])
def test_bfactor_round_trip_equals_the_scores(library, tmp_path, name):
    concept = Concept.load(library)
    result = paint_structure(STRUCT / name, "A", concept, tmp_path)
    scores = concept.score(SEQ_1A8O)[0]
    painted = tmp_path / result["files"][0]
    assert painted.suffix == Path(name).suffix
    back = _bfactors(painted)
    assert len(back) == 70
    for residue, score in zip(back, scores, strict=True):
        assert max(residue) == min(residue)  # every atom of the residue
        assert residue[0] == pytest.approx(float(score), abs=0.006)
    assert np.ptp([r[0] for r in back]) > 0.01  # really painted, not a constant
    assert result["alignment"]["identity"] == 1.0 and not result["alignment"]["mismatches"]
    # waters keep their B-factors
    src = gemmi.read_structure(str(STRUCT / name))
    out = gemmi.read_structure(str(painted))
    water = [a.b_iso for r in src[0]["A"] if r.is_water() for a in r]
    assert water and water == pytest.approx(
        [a.b_iso for r in out[0]["A"] if r.is_water() for a in r]
    )


def test_a_different_sequence_is_aligned_and_its_mismatches_reported(library, tmp_path):
    # a His tag before, one substitution (P160A), the last three residues not scored
    seq = "MGSSHHHHHH" + SEQ_1A8O[:9] + "A" + SEQ_1A8O[10:-3]
    fasta = tmp_path / "uniprot.fasta"
    fasta.write_text(f">tagged_mutant\n{seq}\n")
    concept = Concept.load(library)
    result = paint_structure(STRUCT / "1A8O.pdb", "A", concept, tmp_path / "out", fasta)
    al = result["alignment"]
    assert al["mismatches"] == [
        {"structure_residue": "160", "structure": "P", "position": 20, "sequence": "A"}
    ]
    assert al["structure_residues_without_a_score"] == ["218", "219", "220"]
    assert al["scored_residues_not_in_the_structure"] == 10
    scores = concept.score(seq)[0]
    back = [r[0] for r in _bfactors(tmp_path / "out" / result["files"][0])]
    assert back[:67] == pytest.approx([float(x) for x in scores[10:]], abs=0.006)
    assert back[67:] == [0.0, 0.0, 0.0]


def test_viewer_files_and_the_cli(library, tmp_path):
    runner = CliRunner()
    res = runner.invoke(
        app,
        ["paint", "--structure", str(STRUCT / "1A8O.cif"), "--chain", "A",
         "--concept", str(library), "--out", str(tmp_path)],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "paint.json").read_text())
    defattr = (tmp_path / "1A8O.probe.defattr").read_text().splitlines()
    assert defattr[:3] == ["attribute: esm_tcav_probe", "match mode: 1-to-1", "recipient: residues"]
    assert len(defattr) == 3 + 70 and defattr[3].startswith("\t/A:151\t")
    assert float(defattr[3].split("\t")[2]) == pytest.approx(doc["scores"][0], abs=1e-4)
    pml = (tmp_path / "1A8O.probe.pml").read_text()
    assert pml.startswith("load 1A8O.probe.cif, painted\n") and "spectrum b" in pml
    assert pml.count("select probe_") == sum(s["residues"] is not None for s in doc["spans"])


def test_align_chain_counts_pairs():
    chain = read_chain(STRUCT / "1A8O.pdb", "A")
    al = align_chain(chain, SEQ_1A8O[5:])
    assert al.positions[:5] == [None] * 5 and al.positions[5] == 1
