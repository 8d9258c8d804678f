"""Expected failures. The CLI turns each into one line on stderr and exit status 2."""


class EsmTcavError(Exception):
    """Base for every error a user can fix by changing input, config or environment."""


class InputError(EsmTcavError):
    """A sequence, span or label file is malformed (message names file, record and fix)."""


class ConfigError(EsmTcavError):
    """The YAML config or a CLI option is invalid (message names the key)."""


class ModelMismatchError(EsmTcavError):
    """A checkpoint, tokenizer or artifact does not match the registry or the model in use."""


class ArtifactError(EsmTcavError):
    """A stored artifact is missing, tampered with, or made for another model or layer."""
