"""Terminal output: progress bars with rates (proteins/s and residues/s, or layers or concepts
per second), quiet when not a TTY, and one summary line per step."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

console = Console(stderr=True, soft_wrap=True)  # piped output: one line per message
T = TypeVar("T")


def _bar(label: str) -> Progress:
    """The one bar layout: label, bar, done/total, rate, elapsed; off when not a terminal."""
    return Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        disable=not sys.stderr.isatty(),
    )


@contextmanager
def progress_bar(total: int | None, label: str) -> Iterator[Callable[[int, int], None]]:
    """Yields `advance(proteins, residues)`; prints one summary line at the end."""
    start = time.perf_counter()
    done = {"proteins": 0, "residues": 0}
    bar = _bar(label)
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


def iter_progress(items: Sequence[T], label: str, unit: str) -> Iterator[T]:
    """Iterate ``items`` behind a bar that counts them with a rate (``unit``/s) and prints one
    summary line at the end: for the steps that loop over layers or concepts (train, evaluate,
    library build), which take seconds to minutes each."""
    start = time.perf_counter()
    bar = _bar(label)
    done = 0
    with bar:
        task = bar.add_task(label, total=len(items), rate="")
        for item in items:
            yield item
            done += 1
            dt = max(time.perf_counter() - start, 1e-9)
            bar.update(task, advance=1, rate=f"{done / dt:.2f} {unit}/s, {dt / done:.1f} s each")
    dt = time.perf_counter() - start
    if done:
        console.print(f"{label}: {done} {unit} in {dt:.1f} s ({dt / done:.1f} s each)")
