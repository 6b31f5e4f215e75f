"""Classifier CNNs with a named encoder -> predictor boundary, and their checkpoints.

Import :mod:`neurointerp.models.classifier` / :mod:`neurointerp.models.checkpoint` directly;
this package imports torch only when those modules are used.
"""

from __future__ import annotations

__all__ = [
    "ARCHITECTURES",
    "ConvClassifier",
    "InputSpec",
    "LoadedClassifier",
    "build_classifier",
    "load_checkpoint",
    "save_checkpoint",
]


def __getattr__(name):  # lazy: keep `import neurointerp.models` free of torch
    if name in ("ARCHITECTURES", "ConvClassifier", "build_classifier"):
        from neurointerp.models import classifier

        return getattr(classifier, name)
    if name in ("LoadedClassifier", "load_checkpoint", "save_checkpoint"):
        from neurointerp.models import checkpoint

        return getattr(checkpoint, name)
    if name == "InputSpec":
        from neurointerp.models.inputs import InputSpec

        return InputSpec
    raise AttributeError(name)
