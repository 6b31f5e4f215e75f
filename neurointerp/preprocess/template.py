"""The registration target: a registered template (default nilearn's MNI152 2009a sym) or a NIfTI file.

A :class:`Template` holds the T1 scaled to 0-1, its brain mask, its affine, the honest space name
used in file names, and the working grid (shape, affine) that preprocessed images live on.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from neurointerp.errors import InputError


@dataclass(frozen=True)
class Template:
    space: str
    source: str  # registry name or absolute file path
    t1: np.ndarray = field(repr=False, compare=False)
    mask: np.ndarray = field(repr=False, compare=False)
    affine: np.ndarray = field(repr=False, compare=False)
    registered: bool = True  # a name from the atlas registry (working_grid knows it)
    files: tuple[str, ...] = ()

    def grid(self, shape=None, voxel_size=None) -> tuple[tuple[int, int, int], np.ndarray]:
        """Working grid ``(shape, affine)`` covering the template brain (default 64^3)."""
        from neurointerp.atlases import working_grid

        if shape is None and voxel_size is None:
            shape = (64, 64, 64)
        if self.registered:
            return working_grid(voxel_size=voxel_size, shape=shape, name=self.source)
        from neurointerp.atlases import grid_from_mask

        return grid_from_mask(self.mask, self.affine, voxel_size=voxel_size, shape=shape)


_SPACE_RE = re.compile(r"[^A-Za-z0-9]")


def resolve_template(template: str | os.PathLike | None = None, template_mask: str | os.PathLike | None = None, space: str | None = None) -> Template:
    """Resolve ``--template`` (registry name or NIfTI file), ``--template-mask`` and ``--space``."""
    from neurointerp.atlases import DEFAULT_TEMPLATE, load_template, template_names

    if space is not None and not re.fullmatch(r"[A-Za-z0-9]+", space):
        raise InputError(f"space '{space}': must be letters and digits only (it goes into file names)")
    name = DEFAULT_TEMPLATE if template is None else str(template)
    if template_mask is None and name in template_names():
        t1, mask, affine = load_template(name)
        return Template(space=space or name, source=name, t1=t1, mask=mask, affine=affine, registered=True)
    path = Path(name)
    if not path.exists() and name not in template_names():
        known = ", ".join(template_names())
        raise InputError(f"template '{name}': not a file and not a known template ({known})")
    if not path.exists():  # a registry name with a user mask
        from neurointerp.atlases import template_file

        path = template_file(name)
    return _file_template(path.resolve(), template_mask, space)


def _file_template(path: Path, template_mask, space: str | None) -> Template:
    from neurointerp.io import load_image

    vol = load_image(path)
    t1 = np.clip(vol.data, 0.0, None)
    top = float(np.percentile(t1[t1 > 0], 99.9)) if np.any(t1 > 0) else 0.0
    if top <= 0:
        raise InputError(f"{path}: template has no positive intensities")
    t1 = np.clip(t1 / top, 0.0, 1.0).astype(np.float32)
    files = [str(path)]
    if template_mask is not None:
        mvol = load_image(template_mask)
        if mvol.shape != vol.shape or not np.allclose(mvol.affine, vol.affine, atol=1e-3):
            raise InputError(f"{template_mask}: template mask grid differs from the template {path}")
        mask = mvol.data > 0.5
        files.append(str(Path(template_mask).resolve()))
    else:
        zero = float(np.mean(vol.data == 0))
        if zero < 0.2:
            raise InputError(
                f"{path}: template does not look skull-stripped ({zero:.0%} zero voxels); pass its brain mask with --template-mask"
            )
        from scipy import ndimage

        mask = ndimage.binary_fill_holes(t1 > 0)
    if space is None:
        stem = path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem
        space = _SPACE_RE.sub("", stem)[:40] or "custom"
    t1 = np.where(mask, t1, 0.0).astype(np.float32)
    return Template(space=space, source=str(path), t1=t1, mask=mask, affine=vol.affine, registered=False, files=tuple(files))


def template_on_grid(template: Template, shape, affine) -> tuple[np.ndarray, np.ndarray]:
    """Template T1 (anti-aliased) and brain mask sampled on a grid."""
    if template.registered:
        from neurointerp.atlases import resample_template

        return resample_template(shape, affine, name=template.source)
    return _sample(template, tuple(int(s) for s in shape), np.asarray(affine, dtype=np.float64).tobytes())


def _sample(template: Template, shape, affine_bytes):
    from scipy import ndimage

    from neurointerp.atlases import grid_points

    affine = np.frombuffer(affine_bytes, dtype=np.float64).reshape(4, 4)
    vox = float(np.mean(np.sqrt((affine[:3, :3] ** 2).sum(axis=0))))
    src_vox = float(np.mean(np.sqrt((template.affine[:3, :3] ** 2).sum(axis=0))))
    src = template.t1
    if vox > src_vox * 1.01:
        src = ndimage.gaussian_filter(src, np.sqrt(vox**2 - src_vox**2) / 2.3548 / src_vox, mode="constant")
    coords = np.linalg.solve(template.affine, np.c_[grid_points(shape, affine), np.ones(int(np.prod(shape)))].T)[:3]
    img = ndimage.map_coordinates(src, coords, order=1, mode="constant").reshape(shape)
    m = ndimage.map_coordinates(template.mask.astype(np.float32), coords, order=1, mode="constant").reshape(shape) > 0.5
    return img.astype(np.float32), m


@lru_cache(maxsize=4)
def fixed_image(template: Template, resolution: float):
    """The template as an ANTs image at ``resolution`` mm (anti-aliased), cached per process."""
    from neurointerp.preprocess.antsio import resample_to, to_ants

    return resample_to(to_ants(template.t1, template.affine), float(resolution))
