"""neurointerp: interpretable deep learning on brain MRI.

Every command of the ``neurointerp`` CLI is also a plain Python function with the same
arguments; see :mod:`neurointerp.api`. Heavy dependencies (torch, ants) are imported lazily.
"""

from neurointerp._version import __version__

__all__ = ["__version__"]
