"""esm-tcav: concept activation vectors for ESM-2, with statistics and per-residue localization."""

__version__ = "0.1.0"
