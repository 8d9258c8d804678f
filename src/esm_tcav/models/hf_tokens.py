"""A Hugging Face tokenizer turned into an `Alphabet`, after proving it reads one token per residue.

The engine tokenizes with a lookup table (`Alphabet.encode_array`), not by calling the tokenizer
per protein, so the table must give exactly the ids the model's own tokenizer gives. On load,
`residue_alphabet` derives the table from the tokenizer (one id per letter, the special tokens it
adds before and after a protein), then checks it on a probe protein against the tokenizer's own
call. Tokenizers that merge residues (BPE-style: ProtGPT2, generic text models) are refused.
"""

from __future__ import annotations

import re

from esm_tcav.errors import ModelMismatchError
from esm_tcav.io.proteins import RESIDUE_LETTERS, STANDARD_AMINO_ACIDS
from esm_tcav.models.tokens import Alphabet

#: a token made of two or more residue letters (after a word-start marker): a merged residue pair
_MERGED = re.compile(r"^(▁|Ġ|##)?[A-Z]{2,}$")
#: a probe protein (every standard residue, repeats, runs) the tokenizer must map residue by residue
PROBE = (
    "MKTAYIAKQRQISFVKSHFSRQLEERLGLIEVQAPILSRVGDGTQDNLSGAEKAVQVKVKALPDAQFEVVHSLAKWKRQT"
    "LGQHDFSAGEGLYTHMKALRPDEDRLSPLHSVYVDQWDWERVMGDGERQFSTLKSTVEAIWAGIKATEAAVSEEFGLAPF"
    "LPDQIHFVHSQELLSRYPDL"
)


def tokenize(tokenizer, seq: str, special: bool = True) -> list[int]:
    """The tokenizer's own ids for a protein given residue by residue (ProtT5, Ankh and ProtBERT
    all read a protein as words of one residue each)."""
    enc = tokenizer(list(seq), is_split_into_words=True, add_special_tokens=special)
    return list(enc["input_ids"])


def _refuse(where: str, problem: str) -> ModelMismatchError:
    return ModelMismatchError(
        f"{where}: {problem}; this backend needs a tokenizer with one token per residue (as "
        "ProtT5, Ankh, ProtBERT or ESM); BPE-style tokenizers that merge residues cannot be "
        "mapped residue by residue"
    )


def residue_alphabet(
    tokenizer, name: str, where: str, aliases: dict[str, str] | None = None
) -> Alphabet:
    """The lookup-table alphabet of a character-level tokenizer, proven equal to it on a probe.

    `aliases` maps letters to the letter the model reads instead (ProtT5: U, Z, O, B -> X).
    """
    aliases = dict(aliases or {})
    vocab = tokenizer.get_vocab()
    merged = sorted(t for t in vocab if _MERGED.match(t))
    if merged:
        raise _refuse(where, f"the tokenizer has tokens of several residues ({merged[0]!r}, ...)")
    ids: dict[str, int] = {}
    for letter in sorted(RESIDUE_LETTERS):
        try:
            got = tokenize(tokenizer, letter, special=False)
        except Exception:  # a tokenizer that cannot take words: refused below
            continue
        if len(got) == 1 and got[0] != tokenizer.unk_token_id:
            ids[letter] = got[0]
    missing = sorted(STANDARD_AMINO_ACIDS - set(ids))
    if missing:
        raise _refuse(where, f"no single token for residue {missing[0]!r}")
    for letter, target in aliases.items():
        if target not in ids:
            raise _refuse(where, f"no token for {target!r}, which {letter!r} is read as")
    probe = PROBE + "".join(sorted(ids)) + "".join(sorted(aliases))
    model_view = "".join(aliases.get(c, c) for c in probe)
    full = tokenize(tokenizer, model_view)
    body = [ids[c] for c in model_view]
    starts = [i for i in range(len(full) - len(body) + 1) if full[i : i + len(body)] == body]
    if not starts:
        raise _refuse(where, "a protein does not map to one token per residue")
    lead, tail = full[: starts[0]], full[starts[0] + len(body) :]
    if len(lead) > 1 or len(tail) > 1:
        raise _refuse(where, f"it adds {len(lead)} token(s) before and {len(tail)} after")

    n = max(len(tokenizer), max(vocab.values()) + 1)
    names = [f"<id{i}>" for i in range(n)]
    for tok, i in vocab.items():
        names[i] = tok
    for letter, i in ids.items():
        names[i] = letter
    chosen = set(ids.values())
    for i, tok in enumerate(names):  # a second token spelling a letter must not shadow it
        if i not in chosen and tok in ids:
            names[i] = f"{tok}@{i}"
    special = {
        "bos": names[lead[0]] if lead else None,
        "eos": names[tail[0]] if tail else None,
        "pad": tokenizer.pad_token or names[0],
        "unk": tokenizer.unk_token or tokenizer.pad_token,
        "mask": tokenizer.mask_token if tokenizer.mask_token in vocab else None,
    }
    alphabet = Alphabet(
        tuple(names),
        **special,
        prepend_bos=bool(lead),
        append_eos=bool(tail),
        name=name,
        aliases=tuple(sorted(aliases.items())),
    )
    if alphabet.encode(probe) != full:  # the table reproduces the tokenizer, aliases included
        raise _refuse(where, "its ids could not be reproduced residue by residue")
    return alphabet
