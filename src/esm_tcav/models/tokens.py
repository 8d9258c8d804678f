"""Character-level tokenization and the indexing guardrail: residue i must sit at a known token.

Model-neutral: a backend builds an `Alphabet` from its own vocabulary and names its special
tokens (ESM-2's are in `models/esm2.py`). The engine and TCAV only use what is defined here.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from esm_tcav.errors import ModelMismatchError

log = logging.getLogger("esm_tcav.models.tokens")


@dataclass(frozen=True)
class Alphabet:
    """Token ids for one checkpoint's vocabulary, its special tokens, and whether it adds BOS/EOS.

    Residues are single characters, one token each; `encode_array` tokenizes with a lookup table
    (no Python loop per residue: at GPU speeds the host must prepare a batch faster than the
    device runs one).
    """

    vocab: tuple[str, ...]
    bos: str | None = "<cls>"
    eos: str | None = "<eos>"
    pad: str = "<pad>"
    unk: str = "<unk>"
    mask: str | None = "<mask>"
    extra_specials: tuple[str, ...] = ()
    prepend_bos: bool = True
    append_eos: bool = True
    name: str = "model"  # in error messages: "... the <name> alphabet"
    #: (letter, token) pairs read as another token, e.g. ProtT5's rare residues U/Z/O/B -> X
    aliases: tuple[tuple[str, str], ...] = ()

    @cached_property
    def index(self) -> dict[str, int]:
        return {tok: i for i, tok in enumerate(self.vocab)}

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self.index[token]

    @property
    def pad_id(self) -> int:
        return self.index[self.pad]

    @property
    def bos_id(self) -> int | None:
        return self._id(self.bos)

    @property
    def eos_id(self) -> int | None:
        return self._id(self.eos)

    @property
    def unk_id(self) -> int:
        return self.index[self.unk]

    @property
    def mask_id(self) -> int | None:
        return self._id(self.mask)

    @cached_property
    def special_ids(self) -> np.ndarray:
        named = (self.bos, self.eos, self.pad, self.unk, self.mask, *self.extra_specials)
        return np.array(sorted({self.index[t] for t in named if t in self.index}), dtype=np.int64)

    @cached_property
    def _lut(self) -> np.ndarray:
        lut = np.full(256, self.unk_id, dtype=np.int64)
        for tok, i in self.index.items():
            if len(tok) == 1 and ord(tok) < 256:
                lut[ord(tok)] = i
        for letter, tok in self.aliases:
            lut[ord(letter)] = self.index[tok]
        return lut

    @property
    def lead(self) -> list[int]:
        return [self.bos_id] if self.prepend_bos and self.bos is not None else []

    @property
    def tail(self) -> list[int]:
        return [self.eos_id] if self.append_eos and self.eos is not None else []

    @classmethod
    def read_vocab_file(cls, path: Path) -> tuple[str, ...]:
        return tuple(line.strip() for line in path.read_text().splitlines() if line.strip())

    def residue_ids(self, seq: str) -> np.ndarray:
        """Token id of every residue (unknown characters -> <unk>), vectorized."""
        raw = np.frombuffer(seq.encode("latin-1", errors="replace"), dtype=np.uint8)
        return self._lut[raw]

    def encode_array(self, seq: str) -> np.ndarray:
        """Token ids of one sequence with BOS/EOS as this alphabet adds them, int64."""
        return np.concatenate([self.lead, self.residue_ids(seq), self.tail]).astype(np.int64)

    def encode(self, seq: str) -> list[int]:
        return self.encode_array(seq).tolist()

    def batch(self, seqs: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded token ids and attention mask for a batch of sequences."""
        encoded = [self.encode_array(s) for s in seqs]
        width = max(len(e) for e in encoded)
        tokens = np.full((len(encoded), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encoded), width), dtype=np.int64)
        for row, ids in enumerate(encoded):
            tokens[row, : len(ids)] = ids
            mask[row, : len(ids)] = 1
        return torch.from_numpy(tokens), torch.from_numpy(mask)


class IndexingGuard:
    """Finds where a protein's residues sit among its tokens and logs every correction.

    The model's layout puts residue 1 at token `expected_offset` (ESM-2: 1, right after BOS) and
    EOS right after the last residue. A tokenizer without BOS, or with extra leading special
    tokens, shifts every residue; the guard finds the real offset, checks the residue tokens
    match the sequence, and appends one JSON line per correction to `log_path`.
    """

    def __init__(
        self,
        alphabet: Alphabet,
        log_path: Path | None = None,
        expected_offset: int = 1,
        quiet: bool = False,
    ):
        # quiet: corrections a check plants on purpose (the smoke test) are logged at INFO,
        # not as warnings on the user's console
        self.quiet = quiet
        self.alphabet = alphabet
        self.log_path = log_path
        self.expected = expected_offset
        self.corrections = 0
        self._reported: set[tuple[int, str]] = set()

    def residue_offset(self, token_row, seq: str, protein_id: str) -> int:
        a = self.alphabet
        row = np.asarray(token_row, dtype=np.int64)
        special = np.isin(row, a.special_ids)
        offset = int(np.argmin(special)) if not special.all() else len(row)
        if not np.array_equal(row[offset : offset + len(seq)], a.residue_ids(seq)):
            raise ModelMismatchError(
                f"protein {protein_id!r}: tokens do not reproduce the sequence after offset "
                f"{offset}; the tokenizer does not match the {a.name} alphabet"
            )
        end = offset + len(seq)
        after = int(row[end]) if end < len(row) else None
        problems = []
        bos_ok = self.expected == 0 or (len(row) > 0 and int(row[0]) == a.bos_id)
        if offset != self.expected or not bos_ok:
            problems.append(
                f"residue 1 is token {offset}, expected token {self.expected}"
                + (" after BOS" if self.expected else "")
            )
        if a.eos is not None and after != a.eos_id:
            problems.append("no EOS token right after the last residue")
        if problems:
            self._log(protein_id, offset, "; ".join(problems))
        return offset

    def _log(self, protein_id: str, offset: int, reason: str) -> None:
        self.corrections += 1
        key = (offset, reason)
        if key not in self._reported:
            self._reported.add(key)
            level = logging.INFO if self.quiet else logging.WARNING
            log.log(level, "indexing correction (offset %d): %s", offset, reason)
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            # an append per correction, as they happen (a log, not a result file)
            with self.log_path.open("a") as fh:
                fh.write(
                    json.dumps(
                        {
                            "protein": protein_id,
                            "expected_offset": self.expected,
                            "actual_offset": offset,
                            "reason": reason,
                        }
                    )
                    + "\n"
                )
