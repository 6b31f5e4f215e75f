"""Defaults in run fingerprints: an option left unset is recorded with the value it takes.

Many options default to ``None`` and take their value later (a method's default, a scenario's, the
template registry's). If the fingerprint recorded ``None``, a folder made under one default would
be resumed or reused under another -- a silent mix of two settings. So an option whose unset value
is a constant declares it as its ``fallback`` (``neurointerp.options.core.Spec``), the command uses
``options.resolved(name)``, and ``affecting()`` -- the fingerprint's part -- records it.

Checked for every command of :data:`neurointerp.options.OPTIONS`:

* every option left unset whose help names a default either declares a fallback or is listed in
  :data:`RESOLVED_ELSEWHERE` with where its value comes from (a new option cannot slip through);
* the help text states the value the fallback gives (they cannot drift apart);
* giving the fallback value explicitly is the same fingerprint as leaving the option out;
* saliency's method parameters fall back to the attribution registry's defaults, the values the
  methods run with, and a parameter shared by several methods has one default.

The behavioural side (a re-run with the default given explicitly resumes; another value is
refused) is in ``tests/reliability/test_conformance.py``.
"""

from __future__ import annotations

import dataclasses
import re

import pytest

from neurointerp.options import OPTIONS, options_class

COMMANDS = sorted(OPTIONS)

#: options left unset whose value comes from the run's inputs (fingerprinted by content), from
#: another recorded option, or that are off when unset -- not from a constant of the code
RESOLVED_ELSEWHERE = {
    ("confound-test", "layer"): "the model's encoder -> predictor boundary (model fingerprinted by content)",
    ("evaluate", "truth_mask"): "from --ground-truth",
    ("evaluate", "target"): "each subject's predicted class",
    ("evaluate", "reference"): "the evaluated cohort",
    ("group-map", "design"): "the label column",
    ("group-map", "contrast"): "the classes of the maps",
    ("group-map", "mask"): "from the maps",
    ("jacobian", "space"): "from the field names",
    ("preprocess", "space"): "the template's name (--template is recorded)",
    ("preprocess", "shape"): "the grid over the template brain (recorded as grid)",
    ("saliency", "target"): "each subject's predicted class",
    ("saliency", "layer"): "the model's last spatial layer (model fingerprinted by content)",
    ("saliency", "reference"): "the cohort explained",
    ("saliency", "truth_mask"): "from --ground-truth",
    ("saliency", "channels"): "all channels of --layer",
    ("segment-bg apply", "max_shift"): "a quarter of the slice size of the images",
    ("segment-bg apply", "gbp_score"): "the checkpoint's (recorded as gbp_score_used)",
    ("simulate train", "fc"): "2D or 3D, from the cohort's images",
    ("simulate train", "latent_shape"): "from the image size",
    ("simulate train", "source_class"): "the second label in sorted order",
    ("simulate apply", "target"): "each image's most likely other class",
    ("synth spike-in", "shape"): "the grid over the template brain, as preprocess",
    ("train", "patience"): "off when unset (no early stopping)",
    ("train", "eval_every"): "per model from the step budget; without --patience the checks do not change the weights",
    ("train", "positive_class"): "the second class in sorted order (train's settings hash records it)",
    ("train", "balance_confounders"): "decided from the data (train's settings hash records the decision)",
    ("train", "space"): "from the file names",
}

#: option values that give a fallback its context (a method, a variant, a cross-validation setting)
CONTEXTS = {
    "saliency": lambda: [{"method": _all_methods()}],
    "simulate train": lambda: [{"method": m} for m in ("simulator", "icam", "vagan")],
    "simulate apply": lambda: [{"method": m} for m in ("simulator", "icam", "vagan")],
    "synth gaussians": lambda: [{"variant": v} for v in ("width", "magnitude")],
    "train": lambda: [{"folds": 5}, {"folds": 0}, {"epochs": 3}],
}


def _all_methods() -> tuple[str, ...]:
    from neurointerp.attribution.names import METHOD_NAMES

    return tuple(METHOD_NAMES)


def bare(cls, **values):
    """An options object with its defaults and ``values``, without the construction checks (no files needed)."""
    obj = object.__new__(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        object.__setattr__(obj, f.name, values.get(f.name, default))
    return obj


def _unset_with_default(cls):
    return [i for i in cls.infos() if i.spec.affects and not i.spec.output and not i.spec.positional and i.default is None]


def _spellings(value) -> set[str]:
    if isinstance(value, (tuple, list)):
        return {",".join(map(str, value)), *(str(v) for v in value)}
    if isinstance(value, float):
        return {f"{value:g}", repr(value), f"{value:.0e}".replace("e-0", "e-")}
    return {str(value)}


@pytest.mark.parametrize("command", COMMANDS)
def test_every_default_of_an_unset_option_is_declared_or_resolved_from_the_inputs(command):
    cls = options_class(command)
    undeclared = [
        i.name for i in _unset_with_default(cls)
        if i.spec.fallback is None and "default" in i.spec.help.lower() and (command, i.name) not in RESOLVED_ELSEWHERE
    ]
    assert not undeclared, f"{command}: options whose unset value is a default of the code: give them a fallback (Spec) or list them in RESOLVED_ELSEWHERE: {undeclared}"
    stale = [name for (cmd, name) in RESOLVED_ELSEWHERE if cmd == command and cls.info(name).spec.fallback is not None]
    assert not stale, f"{command}: {stale} declare a fallback and are also listed in RESOLVED_ELSEWHERE"


@pytest.mark.parametrize("command", COMMANDS)
def test_the_help_states_the_value_the_fallback_gives(command):
    cls = options_class(command)
    with_fallback = [i for i in cls.infos() if i.spec.fallback is not None]
    for context in CONTEXTS.get(command, lambda: [{}])():
        o = bare(cls, **context)
        for i in with_fallback:
            value = o.resolved(i.name)
            if value is None or isinstance(value, bool):
                continue
            text = i.spec.help
            if value == 0 and re.search(r"\b(none|off)\b", text):
                continue
            tokens = set(re.findall(r"[\w.+-]+", text))
            assert _spellings(value) & tokens, f"{command} {i.flag}: help does not state the fallback {value!r} ({context}): {text}"


@pytest.mark.parametrize("command", COMMANDS)
def test_the_default_given_explicitly_is_the_same_fingerprint(command):
    cls = options_class(command)
    for context in CONTEXTS.get(command, lambda: [{}])():
        o = bare(cls, **context)
        recorded = o.affecting()
        for i in cls.infos():
            if i.spec.fallback is None or o.resolved(i.name) is None:
                continue
            assert recorded[i.name] is not None, (command, i.name)
            explicit = bare(cls, **context, **{i.name: o.resolved(i.name)})
            assert explicit.affecting() == recorded, (command, i.name, context)
            if isinstance(o.resolved(i.name), (int, float)) and not isinstance(o.resolved(i.name), bool):
                other = bare(cls, **context, **{i.name: o.resolved(i.name) + 1})
                assert other.affecting()[i.name] != recorded[i.name]


def test_a_changed_default_changes_the_fingerprint(monkeypatch):
    """The reason for all this: the fallback's value, not None, enters the run fingerprint."""
    from neurointerp.attribution.registry import get_method
    from neurointerp.options.saliency import SaliencyOptions
    from neurointerp.runs.fingerprint import run_fingerprint

    o = bare(SaliencyOptions, method=("optimised-perturbation",))
    before, _ = run_fingerprint("saliency", o.affecting(), {})
    monkeypatch.setitem(get_method("optimised-perturbation").defaults, "iterations", 500)
    after, record = run_fingerprint("saliency", o.affecting(), {})
    assert after != before and record["options"]["iterations"] == 500


def test_saliency_method_parameters_fall_back_to_the_registry_defaults():
    from neurointerp.attribution.registry import get_method
    from neurointerp.options.saliency import SaliencyOptions

    fields = {i.name for i in SaliencyOptions.infos() if i.spec.fallback is not None}
    assert fields, "saliency declares no fallbacks"
    seen: dict[str, tuple[str, object]] = {}
    for m in _all_methods():
        o = bare(SaliencyOptions, method=(m,))
        for key, value in get_method(m).defaults.items():
            if key in seen and seen[key][1] != value and key in fields:
                pytest.fail(f"{key}: default {seen[key][1]!r} in {seen[key][0]} but {value!r} in {m}: one option cannot record both")
            seen.setdefault(key, (m, value))
            if key in fields:
                assert o.resolved(key) == value, (m, key)
        for key in fields - set(get_method(m).defaults):
            assert o.resolved(key) is None, (m, key)  # a parameter the method does not take stays unset


def test_simulate_train_uses_the_resolved_values(monkeypatch, tmp_path):
    """The CLI passes ``resolved`` values, so the trainer runs with what the fingerprint records."""
    from neurointerp.cli import simulate as cli_simulate
    from neurointerp.options.simulate import SimulateTrainOptions

    seen = {}

    def fake_train_icam(cohort, out, **kw):
        seen.update(kw)
        return out

    import neurointerp.simulate.icam.train as icam_train

    monkeypatch.setattr(icam_train, "train_icam", fake_train_icam)
    o = bare(SimulateTrainOptions, method="icam", paths=(tmp_path / "c.csv", tmp_path / "out"))
    monkeypatch.setattr(SimulateTrainOptions, "named_paths", lambda self: {"cohort": tmp_path / "c.csv", "out": tmp_path / "out"})
    cli_simulate._train(o)
    recorded = o.affecting()
    assert seen["epochs"] == recorded["epochs"] == 30
    assert seen["lr"] == recorded["lr"] and seen["max_draws"] == recorded["max_draws"] and seen["normalize"] == recorded["normalize"]
    assert seen["lambdas"] == {k[len("lambda_"):]: v for k, v in recorded.items() if k.startswith("lambda_") and v is not None and k[len("lambda_"):] in seen["lambdas"]}
    assert seen["channels"] == recorded["channels"][0] and seen["task"] == recorded["task"]


@pytest.mark.parametrize("method", ["simulator", "icam", "vagan"])
def test_the_python_trainers_defaults_equal_the_fallbacks(method):
    """``train_icam(cohort, out)`` from Python and ``simulate train --method icam`` run with the same values."""
    import inspect

    from neurointerp.options.simulate import SimulateTrainOptions
    from neurointerp.simulate.icam.train import train_icam
    from neurointerp.simulate.train import train_simulator
    from neurointerp.simulate.vagan.train import train_vagan

    fn = {"simulator": train_simulator, "icam": train_icam, "vagan": train_vagan}[method]
    o = bare(SimulateTrainOptions, method=method)
    params = inspect.signature(fn).parameters
    checked = 0
    for name in ("epochs", "lr", "max_draws", "normalize", "critic_iters", "task", "channels"):
        if name not in params or o.resolved(name) is None:
            continue
        want = o.resolved(name)
        want = want[0] if name == "channels" else want  # the trainers take the base width as one number
        assert params[name].default == want, (method, name, params[name].default, want)
        checked += 1
    assert checked >= 2
