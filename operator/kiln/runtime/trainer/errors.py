"""The trainer's one exception: a reason for people, naming the field or variable at fault."""

from __future__ import annotations


class TrainerError(Exception):
    """Training cannot go on. The message is the last line of the log, so it says what to fix
    (`sklearn.params.n_estimators: ...`, `KILN_OUTPUT: ...`)."""
