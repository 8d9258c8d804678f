"""A run config without data.negatives splits one labelled file (TMbed) into positives (records
with the concept) and negatives (the others), as the library config does."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from esm_tcav.config import load_config
from esm_tcav.errors import InputError
from esm_tcav.run.dataset import load_dataset

AA = np.array(list("ACDEFGHIKLMNPQRSTVWY"))


def _tmbed(path, n_tm: int, n_plain: int) -> None:
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n_tm + n_plain):
        seq = "".join(rng.choice(AA, 40))
        labels = "1" * 10 + ("H" * 20 if i < n_tm else "1" * 20) + "2" * 10
        if i == n_tm:  # a signal peptide is another label, not the concept
            labels = "S" * 10 + labels[10:]
        lines += [f">p{i}|tmbed", seq, labels]
    path.write_text("\n".join(lines) + "\n")


def _config(folder, **data):
    doc = {
        "output_dir": "out",
        "model": {"name": "esm2_t6_8M_UR50D"},
        "data": {"concept": "tm", "positives": "labels.txt", **data},
    }
    (folder / "run.yaml").write_text(yaml.safe_dump(doc))
    return load_config(folder / "run.yaml")


def test_a_tmbed_file_alone_gives_positives_and_negatives(tmp_path):
    _tmbed(tmp_path / "labels.txt", 5, 6)
    ds = load_dataset(_config(tmp_path, span_names=["transmembrane_helix"]))
    assert [p.id for p in ds.positives] == [f"p{i}" for i in range(5)]
    assert [p.id for p in ds.negatives] == [f"p{i}" for i in range(5, 11)]
    assert all(
        p.spans and {s.name for s in p.spans} == {"transmembrane_helix"} for p in ds.positives
    )
    assert not any(p.spans for p in ds.negatives)  # the signal peptide is not carried over
    assert ds.test_ids  # split by protein as usual


def test_a_file_where_every_record_carries_the_concept_is_refused(tmp_path):
    _tmbed(tmp_path / "labels.txt", 6, 0)
    with pytest.raises(InputError, match="data.negatives is not given"):
        load_dataset(_config(tmp_path, span_names=["transmembrane_helix"]))
