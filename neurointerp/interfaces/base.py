"""Shared pieces of the Nipype interfaces: the command base class and common inputs."""

from __future__ import annotations

import glob
import os

from nipype.interfaces.base import CommandLine, CommandLineInputSpec, Directory, isdefined, traits


def threads_input(argstr: str = "--threads %d"):
    """``num_threads``: CPU threads of the command; not hashed, MultiProc reserves this many."""
    return traits.Int(
        1,
        usedefault=True,
        nohash=True,
        argstr=argstr,
        desc="CPU threads of the command (not hashed; the MultiProc plugin reserves this many)",
    )


def gpu_input():
    """``use_gpu``: True -> ``--device cuda`` and a GPU slot under MultiProc; False -> ``--device cpu``."""
    return traits.Bool(
        nohash=True,
        argstr="--device %s",
        desc="True: run on the GPU (--device cuda; MultiProc schedules the node on a GPU slot); "
        "False: --device cpu; unset: --device auto",
    )


def out_dir_input(source: str, suffix: str, position: int):
    """Positional output folder, by default ``<input name>_<suffix>`` in the node's directory."""
    return Directory(
        argstr="%s",
        position=position,
        name_source=[source],
        name_template=f"%s_{suffix}",
        keep_extension=False,
        hash_files=False,
        desc=f"Output folder (default: <{source} name>_{suffix} in the node's working directory)",
    )


def flag(option: str, desc: str, negative: str | None = None):
    """A boolean option: ``--x`` when True, ``--no-x`` (``negative``) when False, nothing when unset."""
    return traits.Bool(argstr=option, neg_argstr=negative, desc=desc)


class NeurointerpInputSpec(CommandLineInputSpec):
    force = traits.Bool(argstr="--force", desc="Overwrite / redo outputs of an earlier run in the output folder")


class NeurointerpCommand(CommandLine):
    """Base of the ``neurointerp`` interfaces: ``_cmd`` is ``neurointerp <subcommand>``.

    Booleans with a ``neg_argstr`` give ``--no-x`` when set to False; ``use_gpu`` becomes
    ``--device cuda``/``--device cpu``. Subclasses list extra outputs in :meth:`_outputs_in`.
    """

    input_spec = NeurointerpInputSpec
    _cmd = "neurointerp"

    def _format_arg(self, name, spec, value):
        if name == "use_gpu":
            return spec.argstr % ("cuda" if value else "cpu")
        if spec.neg_argstr and value is False:
            return spec.neg_argstr
        return super()._format_arg(name, spec, value)

    def _list_outputs(self):
        outputs = super()._list_outputs() or self.output_spec().trait_get()  # None without name_source inputs
        out_dir = outputs.get("out_dir")
        if out_dir is None or not isdefined(out_dir):
            out_dir = os.path.abspath(self.inputs.out_dir)
            outputs["out_dir"] = out_dir
        outputs.update(self._outputs_in(out_dir))
        return outputs

    def _outputs_in(self, out_dir: str) -> dict:
        """Outputs found in the finished output folder (override)."""
        return {}

    @staticmethod
    def _glob(out_dir: str, pattern: str) -> list[str]:
        return sorted(glob.glob(os.path.join(out_dir, pattern), recursive=True))

    @staticmethod
    def _file(out_dir: str, name: str):
        path = os.path.join(out_dir, name)
        return path if os.path.exists(path) else traits.Undefined
