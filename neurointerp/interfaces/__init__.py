"""Nipype interfaces to the ``neurointerp`` subcommands (needs the ``nipype`` extra).

One ``CommandLine`` interface per subcommand; each runs the installed ``neurointerp``
command, so a Nipype node does exactly what the CLI does (same outputs, sidecars, skipping of
finished subjects). Output folders are named from the main input (``cohort.csv`` ->
``cohort_preprocess``) inside the node's working directory unless given; ``num_threads`` and
``use_gpu`` are not hashed (changing them does not rerun a node) and let the ``MultiProc``
plugin schedule CPU threads and GPU slots.

>>> from nipype import Node, Workflow                                   # doctest: +SKIP
>>> from neurointerp.interfaces import Preprocess, GroupMap             # doctest: +SKIP
>>> prep = Node(Preprocess(in_file="cohort.csv", num_threads=2), name="preprocess")  # doctest: +SKIP

Each command writes a whole derivatives folder (images, sidecars, tables) inside the node's
directory. Nipype deletes the files of a node that no downstream node is connected to
(``execution.remove_unnecessary_outputs``, on by default), which would leave such a folder
half-empty: set it to false in workflows of these interfaces::

    wf.config["execution"]["remove_unnecessary_outputs"] = False

Pass ``command="python -m neurointerp <subcommand>"`` to run another installation.
"""

from __future__ import annotations

try:
    import nipype  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised by the no-nipype test
    raise ImportError(
        "neurointerp.interfaces needs Nipype, which is not installed: pip install 'neurointerp[nipype]'"
    ) from exc

from neurointerp.interfaces.attribution import GroupMap, Saliency
from neurointerp.interfaces.base import NeurointerpCommand
from neurointerp.interfaces.models import ConfoundTest, Evaluate, Train
from neurointerp.interfaces.preprocessing import Demo, Preprocess, SynthBrain, SynthGaussians, SynthLesions, SynthRodent, SynthSpikeIn
from neurointerp.interfaces.segmentation import SegmentBgApply, SegmentBgTrain
from neurointerp.interfaces.simulation import Jacobian, SimulateApply, SimulateTrain

__all__ = [
    "ConfoundTest",
    "Demo",
    "Evaluate",
    "GroupMap",
    "Jacobian",
    "NeurointerpCommand",
    "Preprocess",
    "Saliency",
    "SegmentBgApply",
    "SegmentBgTrain",
    "SimulateApply",
    "SimulateTrain",
    "SynthBrain",
    "SynthGaussians",
    "SynthLesions",
    "SynthRodent",
    "SynthSpikeIn",
    "Train",
]
