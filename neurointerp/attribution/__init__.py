"""Attribution methods behind one registry (:func:`neurointerp.attribution.registry.attribute`).

Importing this package imports neither torch nor numpy; the method modules do.
"""

from neurointerp.attribution.names import METHOD_NAMES

__all__ = ["METHOD_NAMES", "attribute", "get_method"]


def __getattr__(name):
    if name in ("attribute", "get_method"):
        from neurointerp.attribution import registry

        return getattr(registry, name)
    raise AttributeError(name)
