"""Terminal output: a progress bar with proteins/s and residues/s (quiet when not a TTY)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True)


@contextmanager
def progress_bar(total: int | None, label: str) -> Iterator[Callable[[int, int], None]]:
    """Yields `advance(proteins, residues)`; prints one summary line at the end."""
    start = time.perf_counter()
    done = {"proteins": 0, "residues": 0}
    bar = Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not sys.stderr.isatty(),
    )
    with bar:
        task = bar.add_task(label, total=total, rate="")

        def advance(proteins: int, residues: int) -> None:
            done["proteins"] += proteins
            done["residues"] += residues
            dt = max(time.perf_counter() - start, 1e-9)
            rate = f"{done['proteins'] / dt:.1f} prot/s {done['residues'] / dt:,.0f} res/s"
            bar.update(task, advance=proteins, rate=rate)

        yield advance
    dt = time.perf_counter() - start
    if done["proteins"]:
        console.print(
            f"{label}: {done['proteins']} proteins, {done['residues']:,} residues in {dt:.1f} s "
            f"({done['residues'] / max(dt, 1e-9):,.0f} residues/s)"
        )
