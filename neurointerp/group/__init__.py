"""Group statistics of maps: streaming moments, voxelwise GLM (t, z, FDR q, permutation FWE),
atlas region tables and figures. Entry point: :func:`neurointerp.group.api.group_map`."""

from neurointerp.group.api import group_map

__all__ = ["group_map"]
