"""FakeMetricProvider: scripted answers in memory, for tests of the controller and the plans."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from kiln.providers.metrics import base


class FakeMetricProvider:
    """Answers each expression from a script and records every query it is asked.

    `answer(expression, a, b, c)` gives a, then b, then c, and c again for every later query, so
    one scripted answer is a constant. An expression with no script gets an error Answer, as a
    real provider asked something it cannot answer would: a test sees it, nothing raises.
    Thread-safe, since the controller queries from worker threads.
    """

    def __init__(self, script: Iterable[tuple[str, base.Answer]] = ()) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, list[base.Answer]] = {}
        self._received: list[base.Query] = []
        for expression, answer in script:
            self.answer(expression, answer)

    def answer(self, expression: str, *answers: base.Answer) -> None:
        """Script the answers to `expression`, replacing any earlier script for it."""
        if not answers:
            raise ValueError("script at least one answer")
        with self._lock:
            self._scripts[expression] = list(answers)

    def query(self, query: base.Query) -> base.Answer:
        with self._lock:
            self._received.append(query)
            script = self._scripts.get(query.expression)
            if script is None:
                return base.Answer.failure(f"the fake metric provider has no answer for {query.expression!r}")
            return script.pop(0) if len(script) > 1 else script[0]

    @property
    def queries(self) -> list[base.Query]:
        """The queries received so far, oldest first."""
        with self._lock:
            return list(self._received)
