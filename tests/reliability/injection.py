"""One subject fails while it is processed: the failure-isolation tests of every per-subject command."""

from __future__ import annotations


def inject_failure(monkeypatch, pid: str):
    """Make the items of participant ``pid`` raise ``RuntimeError("injected failure")`` inside the
    per-subject runner (``runs.subjects._process``); returns the original to restore it.

    After another test imported ants with another ITK thread count, preprocess would run each
    subject in a fresh process (``runs.subjects._parallel``), which this in-process patch cannot
    reach: preprocess is kept in this process (only its ITK thread count differs).
    """
    import neurointerp.preprocess.antsio as antsio
    import neurointerp.runs.subjects as subjects

    original = subjects._process

    def inject(process, batch):
        def wrapped(b):
            if any(it.key.startswith(f"sub-{pid}") for it in b):
                raise RuntimeError("injected failure")
            return process(b)

        return original(wrapped, batch)

    monkeypatch.setattr(subjects, "_process", inject)
    monkeypatch.setattr(antsio, "itk_threads_fixed_otherwise", lambda threads: False)
    return original
