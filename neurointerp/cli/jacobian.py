"""``neurointerp jacobian``: Jacobian determinant maps of displacement fields, and group means."""

from __future__ import annotations

from neurointerp.options.cli import command
from neurointerp.options.jacobian import JacobianOptions


def _run(o: JacobianOptions) -> None:
    from neurointerp.progress import info
    from neurointerp.simulate.jacobian import jacobian_maps

    info(f"wrote {jacobian_maps(options=o)}")


jacobian = command(JacobianOptions, _run)
