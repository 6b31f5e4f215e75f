"""Rodent tissue segmentation with guided-backprop-driven background removal.

papers/gbp-background-removal-segmentation.txt: a 2D U-Net segments background, white matter,
grey matter and CSF; guided backprop shows what it looks at; the enhanced gradient image
positions a brain mask by cross-correlation; the background is removed and the slice segmented
again.

Modules: :mod:`.unet` (model), :mod:`.losses` (Dice), :mod:`.train` (training, ``run_train``),
:mod:`.enhance` (the §4.3 enhancement steps), :mod:`.position` (FFT cross-correlation, mask
positioning), :mod:`.core` (slice-wise segmentation, gradient images, background removal),
:mod:`.metrics` (§4.4), :mod:`.apply` (``run_apply``), :mod:`.demo` (``demo_step``).
Heavy imports (torch) happen inside the functions.
"""

from __future__ import annotations


def run_train(*args, **kwargs):
    """See :func:`neurointerp.segment_bg.train.run_train`."""
    from neurointerp.segment_bg.train import run_train as _run

    return _run(*args, **kwargs)


def run_apply(*args, **kwargs):
    """See :func:`neurointerp.segment_bg.apply.run_apply`."""
    from neurointerp.segment_bg.apply import run_apply as _run

    return _run(*args, **kwargs)


def demo_step(*args, **kwargs):
    """See :func:`neurointerp.segment_bg.demo.demo_step`."""
    from neurointerp.segment_bg.demo import demo_step as _run

    return _run(*args, **kwargs)


__all__ = ["demo_step", "run_apply", "run_train"]
