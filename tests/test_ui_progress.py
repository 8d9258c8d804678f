"""Progress of the steps that loop over layers or concepts: every item, in order, and a summary
line with the rate."""

from __future__ import annotations

from esm_tcav import ui


def test_iter_progress_yields_every_item_and_reports_the_rate(capsys, monkeypatch):
    from rich.console import Console

    monkeypatch.setattr(ui, "console", Console(stderr=True, force_terminal=False, width=200))
    assert list(ui.iter_progress([3, 1, 2], "train", "layers")) == [3, 1, 2]
    err = capsys.readouterr().err
    assert "train: 3 layers in" in err and "s each" in err
    assert list(ui.iter_progress([], "evaluate", "layers")) == []
