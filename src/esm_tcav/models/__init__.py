"""Protein language-model backends: the interface, the registry, and one module per model family."""

import os
import sys


def quiet_model_libraries() -> None:
    """Silence the model libraries' progress bars and advisories: our console talks plainly.

    Set through the environment variables transformers and huggingface_hub read at import, so
    that a verb that never loads a model (``--help``, ``models``) never imports them; when they
    are already imported, through their logging API as well.
    """
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" not in sys.modules:
        return
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
