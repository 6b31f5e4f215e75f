"""``neurointerp group-map``: group statistics and atlas summaries of attribution and Jacobian maps."""

from __future__ import annotations

from neurointerp.options.cli import command
from neurointerp.options.group_map import GroupMapOptions


def _run(o: GroupMapOptions) -> None:
    from neurointerp.group.api import group_map as run
    from neurointerp.progress import info

    info(f"wrote {run(options=o)}")


group_map = command(GroupMapOptions, _run)
