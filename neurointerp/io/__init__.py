"""Data contracts: NIfTI volumes, cohort tables, derivatives layout, provenance, atomic writes."""

from neurointerp.io.atomic import atomic_path, check_writable, write_json, write_table, write_text
from neurointerp.io.cohort import Cohort, numeric_covariate, read_cohort, write_cohort
from neurointerp.io.derivatives import (
    add_bidsignore,
    bids_name,
    derivative_path,
    prepare_output_dir,
    sidecar_path,
    write_dataset_description,
    write_sidecar,
)
from neurointerp.io.headers import load_mask_like, read_header
from neurointerp.io.nifti import Volume, check_affine, is_nifti_path, load_image, save_image
from neurointerp.io.provenance import provenance, sha256

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
    "write_cohort",
    "write_dataset_description",
    "write_json",
    "write_sidecar",
    "write_table",
    "write_text",
]
