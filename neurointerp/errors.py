"""Exceptions that the command line turns into exit codes.

* :class:`InputError` -- bad usage or bad input (exit code 2). Its message is one line that
  names the culprit (file, row, column).
* :class:`NeurointerpError` -- a runtime failure (exit code 1).
"""

from __future__ import annotations


class NeurointerpError(Exception):
    """A runtime failure; the CLI exits with code 1."""

    exit_code = 1


class InputError(NeurointerpError, ValueError):
    """Bad usage or bad input; the CLI exits with code 2 and prints one line."""

    exit_code = 2


class CohortError(InputError):
    """A cohort table with one or more problems; ``problems`` lists all of them."""

    def __init__(self, path, problems: list[str]):
        self.path = str(path)
        self.problems = list(problems)
        n = len(self.problems)
        head = _located(self.path, self.problems[0]) if n else f"{self.path}: invalid cohort table"
        if n > 1:
            head += f" (and {n - 1} more problem{'s' if n > 2 else ''}: " + "; ".join(self.problems[1:4])
            head += "; ...)" if n > 4 else ")"
        super().__init__(head)


def _located(path: str, problem: str) -> str:
    """``cohort.csv row 14: ...`` for row problems, ``cohort.csv: ...`` otherwise."""
    return f"{path} {problem}" if problem.startswith("row ") else f"{path}: {problem}"
