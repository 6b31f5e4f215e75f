"""Options of ``neurointerp jacobian``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Optional

from neurointerp.errors import InputError
from neurointerp.options import common as c
from neurointerp.options.core import Options, arg, flag, opt


@dataclass(frozen=True)
class JacobianOptions(Options):
    """Determinant and log-determinant of the Jacobian of displacement fields (agrees with ANTs)."""

    command: ClassVar[str] = "jacobian"

    inputs: Path = arg("A displacement field (NIfTI vector image, ITK/ANTs convention), a table (fields.tsv of `simulate apply`: participant_id, field[, session_id, direction, image]; ids letters and digits, rows checked before any work) or a `simulate apply` folder (its fields.tsv or the fields-part*.tsv of an array).", exists=True, nipype="in_file", affects=False)
    out: Path = c.output_folder("Output folder (per-subject _jacobian/_logjacobian maps, jacobian.tsv, group/ means).")
    template: Optional[Path] = opt(None, "Template image: group maps in its space (fields must lie on its grid unless --register).", exists=True)
    register: bool = flag(False, "Align each subject's image to --template with ANTs SyN first and resample its log-Jacobian (§4.2 group maps).")
    inverse: bool = flag(False, "Maps of the inverse mapping (1/det, -log det): the volume change from the input to the warped image, for pull-back fields such as simulate's.")
    field_column: str = c.column("field", "Table column with the field paths.")
    image_column: str = c.column("image", "Table column with each subject's image (for --register and grid checks).")
    space: Optional[str] = opt(None, "Space name for the group maps (default: from the field names).")
    clamp: bool = flag(True, "As ANTs: determinant floored at 0, log-determinant at log(0.001).", "--no-clamp")
    threads: Optional[int] = c.threads("ITK threads for --register (default $SLURM_CPUS_PER_TASK).")
    seed: int = c.seed("Registration random seed.")
    array_index: Optional[int] = c.array_index("This task's index in a job array (default $SLURM_ARRAY_TASK_ID): rows index, index + size, ...")
    array_size: Optional[int] = c.array_size()
    force: bool = c.force(per_subject=True)

    def check(self) -> None:
        if self.register and self.template is None:
            raise InputError("--register needs --template (the image to align the subjects to)")
