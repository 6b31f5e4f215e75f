"""Options of ``neurointerp demo``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from neurointerp.options import common as c
from neurointerp.options.core import Options, arg, opt


@dataclass(frozen=True)
class DemoOptions(Options):
    """Run every available step on a small synthetic brain cohort and write report.html."""

    command: ClassVar[str] = "demo"

    out: Path = arg("Output folder (created; must be empty unless --force).", default=Path("neurointerp-demo"), output=True, metavar="OUT", nipype="out_dir")
    n_subjects: int = opt(40, "Subjects in the synthetic cohort (at least 16).", minimum=16)
    voxel_size: float = opt(4.0, "Voxel size in mm of the synthetic cohort.", above=0)
    seed: int = c.seed("Random seed.")
    force: bool = c.force()
