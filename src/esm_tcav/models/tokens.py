"""ESM-2 tokenization and the indexing guardrail: residue i (1-based) must be token i."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from esm_tcav.errors import ModelMismatchError

log = logging.getLogger("esm_tcav.models.tokens")

SPECIAL = {"<cls>", "<pad>", "<eos>", "<unk>", "<mask>", "<null_1>"}


@dataclass(frozen=True)
class Alphabet:
    """Token ids for one checkpoint's vocabulary, and whether it adds BOS/EOS."""

    vocab: tuple[str, ...]
    prepend_bos: bool = True
    append_eos: bool = True

    @property
    def index(self) -> dict[str, int]:
        return {tok: i for i, tok in enumerate(self.vocab)}

    @property
    def pad_id(self) -> int:
        return self.index["<pad>"]

    @property
    def bos_id(self) -> int:
        return self.index["<cls>"]

    @property
    def eos_id(self) -> int:
        return self.index["<eos>"]

    @property
    def mask_id(self) -> int:
        return self.index["<mask>"]

    @classmethod
    def from_vocab_file(cls, path: Path) -> Alphabet:
        return cls(tuple(line.strip() for line in path.read_text().splitlines() if line.strip()))

    def encode(self, seq: str) -> list[int]:
        idx = self.index
        unk = idx["<unk>"]
        ids = [idx.get(ch, unk) for ch in seq]
        return (
            ([self.bos_id] if self.prepend_bos else [])
            + ids
            + ([self.eos_id] if self.append_eos else [])
        )

    def batch(self, seqs: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded token ids and attention mask for a batch of sequences."""
        encoded = [self.encode(s) for s in seqs]
        width = max(len(e) for e in encoded)
        tokens = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.long)
        for row, ids in enumerate(encoded):
            tokens[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, : len(ids)] = 1
        return tokens, mask


class IndexingGuard:
    """Finds where a protein's residues sit among its tokens and logs every correction.

    The expected layout is BOS at token 0, residue i at token i, EOS right after the last
    residue. A tokenizer without BOS, or with extra leading special tokens, shifts every residue;
    the guard finds the real offset, checks the residue tokens match the sequence, and appends one
    JSON line per correction to `log_path`.
    """

    def __init__(self, alphabet: Alphabet, log_path: Path | None = None):
        self.alphabet = alphabet
        self.log_path = log_path
        self.corrections = 0
        self._reported: set[tuple[int, str]] = set()

    def residue_offset(self, token_row: list[int], seq: str, protein_id: str) -> int:
        ids = self.alphabet.index
        residue_ids = [ids.get(ch, ids["<unk>"]) for ch in seq]
        specials = {ids[t] for t in SPECIAL if t in ids}
        offset = 0
        while offset < len(token_row) and token_row[offset] in specials:
            offset += 1
        if token_row[offset : offset + len(seq)] != residue_ids:
            raise ModelMismatchError(
                f"protein {protein_id!r}: tokens do not reproduce the sequence after offset "
                f"{offset}; the tokenizer does not match the ESM-2 alphabet"
            )
        after = token_row[offset + len(seq)] if offset + len(seq) < len(token_row) else None
        problems = []
        if offset != 1 or token_row[0] != self.alphabet.bos_id:
            problems.append(f"residue 1 is token {offset}, expected token 1 after BOS")
        if after != self.alphabet.eos_id:
            problems.append("no EOS token right after the last residue")
        if problems:
            self._log(protein_id, offset, "; ".join(problems))
        return offset

    def _log(self, protein_id: str, offset: int, reason: str) -> None:
        self.corrections += 1
        key = (offset, reason)
        if key not in self._reported:
            self._reported.add(key)
            log.warning("indexing correction (offset %d): %s", offset, reason)
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            # an append per correction, as they happen (a log, not a result file)
            with self.log_path.open("a") as fh:
                fh.write(
                    json.dumps(
                        {
                            "protein": protein_id,
                            "expected_offset": 1,
                            "actual_offset": offset,
                            "reason": reason,
                        }
                    )
                    + "\n"
                )
