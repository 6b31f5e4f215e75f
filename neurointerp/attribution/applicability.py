"""Methods that apply to some architectures only, checked before anything is written.

``cam`` needs a global-average-pooling network with one linear layer and the logit score;
``attention`` needs attention gates (and ``--layer``, if given, must name one).
"""

from __future__ import annotations

from typing import Sequence

from neurointerp.errors import InputError


def check_methods_apply(model, methods: Sequence[str], score: str = "logit", layer: str | None = None) -> None:
    """Raise the method's one-line refusal if it cannot explain ``model``."""
    if "cam" in methods:
        from neurointerp.attribution.cam import NOT_LINEAR, cam_parts

        cam_parts(model)
        if score != "logit":
            raise InputError(NOT_LINEAR)
    if "attention" in methods:
        from neurointerp.attribution.attention import gate_modules

        gate_modules(model, layer)
