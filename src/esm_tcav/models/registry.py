"""The model registry: expected shapes of every supported checkpoint, shipped as YAML.

Each entry names its backend (`backend: esm2` by default): a module of `esm_tcav.models` or,
in a user's registry file, an import path (`package.module` or `package.module:loader`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from esm_tcav.errors import ConfigError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    hidden_size: int
    num_layers: int
    default_taps: tuple[int, ...]
    num_heads: int = 0
    backend: str = "esm2"
    max_tokens: int = 1024
    source: dict = field(default_factory=dict)
    description: str = ""
    license: str = ""
    params: str = ""
    vocab: tuple[str, ...] = ()
    #: letters the model reads as another residue's token (ProtT5: {U: X, Z: X, O: X, B: X})
    residue_aliases: dict = field(default_factory=dict)

    @property
    def max_residues(self) -> int:
        """Residues that fit in one forward pass next to BOS and EOS."""
        return self.max_tokens - 2

    def resolve_layers(self, taps: list[int] | tuple[int, ...] | None = None) -> list[int]:
        """Absolute, sorted, unique layer indices (0 = embeddings; -1 = last layer)."""
        taps = list(self.default_taps if taps is None else taps)
        if not taps:
            raise ConfigError(f"model {self.name!r}: no layers to tap; give at least one layer")
        out = set()
        for t in taps:
            if not isinstance(t, int) or isinstance(t, bool):
                raise ConfigError(f"model {self.name!r}: layer tap {t!r} is not an integer")
            a = t + self.num_layers + 1 if t < 0 else t
            if not 0 <= a <= self.num_layers:
                raise ConfigError(
                    f"model {self.name!r}: layer tap {t} is out of range; this model has layers "
                    f"0..{self.num_layers} (or -{self.num_layers + 1}..-1 from the end)"
                )
            out.add(a)
        return sorted(out)


def _parse(doc: dict, origin: str, vocab: tuple[str, ...] = ()) -> dict[str, ModelSpec]:
    """Registry entries; an ESM-2 entry without `vocab` inherits the built-in ESM-2 one."""
    vocab = tuple(doc.get("vocab", vocab))
    specs = {}
    for name, entry in (doc.get("models") or {}).items():
        esm2 = entry.get("backend", "esm2") == "esm2"
        try:
            specs[name] = ModelSpec(
                name=name,
                vocab=tuple(entry.pop("vocab", vocab if esm2 else ())),
                default_taps=tuple(entry.pop("default_taps")),
                **entry,
            )
        except (TypeError, KeyError) as exc:
            raise ConfigError(f"{origin}: model {name!r}: invalid registry entry ({exc})") from exc
    return specs


@cache
def _builtin() -> dict[str, ModelSpec]:
    text = resources.files("esm_tcav.models").joinpath("registry.yaml").read_text()
    return _parse(yaml.safe_load(text), "built-in registry")


def load_registry(extra: str | Path | None = None) -> dict[str, ModelSpec]:
    """Built-in registry, updated by a user's registry YAML (same layout) when given."""
    specs = dict(_builtin())
    if extra is not None:
        path = Path(extra)
        if not path.is_file():
            raise ConfigError(f"{path}: registry file not found")
        builtin_vocab = next(iter(specs.values())).vocab
        specs.update(_parse(yaml.safe_load(path.read_text()) or {}, str(path), builtin_vocab))
    return specs


def get_spec(name: str, extra: str | Path | None = None) -> ModelSpec:
    specs = load_registry(extra)
    if name not in specs:
        raise ConfigError(
            f"model {name!r} is not in the registry; known models: {', '.join(sorted(specs))}"
        )
    return specs[name]


def list_specs(extra: str | Path | None = None) -> list[ModelSpec]:
    return list(load_registry(extra).values())
