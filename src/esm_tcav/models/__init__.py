"""Protein language-model backends: the interface, the registry, and one module per model family."""


def quiet_model_libraries() -> None:
    """Silence the model libraries' progress bars and advisories: our console talks plainly."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover
        return
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
