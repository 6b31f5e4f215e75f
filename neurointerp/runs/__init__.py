"""Runs: who made an output folder, what is done in it, and the per-subject job runner.

One mechanism for every command (see README, "Runs and output folders"):

* :mod:`neurointerp.runs.fingerprint` -- the fingerprint of a run (command, output-affecting
  options, sha256 of its inputs) and of each subject in it;
* :mod:`neurointerp.runs.folder` -- folder ownership: ``OUT/.neurointerp/<command>/run.json``
  records the command and run that own the folder; another command or an incompatible run is
  refused unless ``--force``, which starts that command's run over and never touches inputs or
  another command's files;
* :mod:`neurointerp.runs.subjects` -- the per-subject runner: array share, done / stale /
  missing per subject, failure isolation with ``failures.tsv``, and a locked completion step that
  writes the group outputs once, from maps of one run;
* :mod:`neurointerp.runs.maps` -- which files of a folder are per-subject maps (what group-map,
  jacobian and evaluate may read).
"""

from neurointerp.runs.folder import RunFolder, claim_folder
from neurointerp.runs.subjects import Item, RunFailures, RunOutcome, run_items

__all__ = ["Item", "RunFailures", "RunFolder", "RunOutcome", "claim_folder", "run_items"]
