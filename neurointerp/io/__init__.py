"""Data contracts: NIfTI volumes, cohort tables, derivatives layout, provenance, atomic writes."""

import importlib

# light modules (no numpy): imported now; ``provenance`` must name the function, not its module
from neurointerp.io.atomic import atomic_path, check_writable, write_json, write_table, write_text
from neurointerp.io.derivatives import (
    add_bidsignore,
    bids_name,
    common_res,
    derivative_path,
    prepare_output_dir,
    res_of,
    resolution_label,
    sidecar_path,
    space_of,
    derived_from,
    is_anatomical,
    skull_stripped_of,
    stat_desc,
    write_dataset_description,
    write_dseg_tsv,
    write_participants,
    write_sidecar,
)
from neurointerp.io.provenance import provenance, sha256

# lazy: importing neurointerp.io (e.g. for the provenance of a command line) must not import
# numpy or nibabel, so that ``neurointerp --help`` stays instant
_WHERE = {
    "atomic_path": "atomic", "check_writable": "atomic", "write_json": "atomic", "write_table": "atomic", "write_text": "atomic",
    "Cohort": "cohort", "numeric_covariate": "cohort", "read_cohort": "cohort", "write_cohort": "cohort",
    "add_bidsignore": "derivatives", "derived_from": "derivatives", "is_anatomical": "derivatives", "bids_name": "derivatives", "derivative_path": "derivatives", "prepare_output_dir": "derivatives",
    "res_of": "derivatives", "common_res": "derivatives", "resolution_label": "derivatives", "space_of": "derivatives",
    "sidecar_path": "derivatives", "write_dataset_description": "derivatives", "write_sidecar": "derivatives",
    "Volume": "nifti", "check_affine": "nifti", "is_nifti_path": "nifti", "load_image": "nifti", "save_image": "nifti",
    "provenance": "provenance", "sha256": "provenance",
    "load_mask_like": "headers", "read_header": "headers",
}


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f"neurointerp.io.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'neurointerp.io' has no attribute {name!r}")


__all__ = [
    "Cohort",
    "Volume",
    "add_bidsignore",
    "atomic_path",
    "bids_name",
    "check_affine",
    "check_writable",
    "derivative_path",
    "is_nifti_path",
    "load_image",
    "load_mask_like",
    "numeric_covariate",
    "prepare_output_dir",
    "provenance",
    "read_cohort",
    "read_header",
    "save_image",
    "sha256",
    "sidecar_path",
    "derived_from",
    "is_anatomical",
    "skull_stripped_of",
    "stat_desc",
    "write_cohort",
    "write_dataset_description",
    "write_dseg_tsv",
    "write_participants",
    "write_json",
    "write_sidecar",
    "write_table",
    "write_text",
]
