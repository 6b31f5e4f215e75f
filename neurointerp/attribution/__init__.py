"""Attribution methods behind one registry (:func:`neurointerp.attribution.registry.attribute`).

Importing this package does not import torch; the method modules do.
"""

from neurointerp.attribution.registry import METHOD_NAMES, attribute, get_method

__all__ = ["METHOD_NAMES", "attribute", "get_method"]
