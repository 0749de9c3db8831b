"""`kiln-trainer`: fits a scikit-learn estimator, measures it, and registers a ModelVersion.

It runs inside a TrainingJob's pod and reads its whole contract from the environment
(`settings.Settings`). The steps, one module each: `datasets` (load and digest the data),
`expectations` (data validation before fitting), `estimators` (the allowlisted estimator),
`evaluation` (held-out split and metrics), `baseline` (feature histograms for drift), `artifact`
(canonical skops bytes, written atomically), `checkpoint` (resume without refitting),
`registration` (the ModelVersion, through the API) and `result` (the result file the operator
reads). `run` strings them together, and rank 0 reports its progress through
`kiln.runtime.progress`.

It logs one line per step to stdout; on failure it logs the reason as the last line, to stderr, and
exits 1, or `DATASET_REJECTED_EXIT_CODE` (65) when the data breaks its `expectations`. Imports only
kiln.api, kiln.artifacts and kiln.runtime of Kiln (and `kiln.monitoring.statistics`, the PSI drift
detection uses), and the `kubernetes` client.
"""

from __future__ import annotations

import sys
import traceback
from collections.abc import Sequence

from kiln.api import trainingjob
from kiln.runtime import preemption, progress
from kiln.runtime.trainer import errors, expectations, registration, run, settings

PREFIX = "kiln-trainer:"
USAGE = "usage: kiln-trainer (takes no arguments; the KILN_* environment variables configure it)"


def say(message: str) -> None:
    print(f"{PREFIX} {message}", flush=True)


def fail(reason: str, code: int = 1) -> int:
    sys.stdout.flush()
    print(f"{PREFIX} failed: {reason}", file=sys.stderr, flush=True)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments:
        print(USAGE, file=sys.stderr if arguments not in (["-h"], ["--help"]) else sys.stdout)
        return 0 if arguments in (["-h"], ["--help"]) else 2
    unsaved = run.Unsaved()
    # SIGTERM (preempted, suspended, deleted) keeps a finished fit and exits at once, with a log line.
    preemption.on_sigterm(lambda: unsaved.save(say), say=say)
    try:
        with progress.Reporter() as reports:
            run.train(settings.Settings.from_environment(), registration.KubeModelVersions, say, reports, unsaved)
    except expectations.DatasetRejected as error:
        return fail(str(error), trainingjob.DATASET_REJECTED_EXIT_CODE)
    except errors.TrainerError as error:
        return fail(str(error))
    except Exception as error:
        traceback.print_exc()
        return fail(f"unexpected {type(error).__name__}: {error}")
    say("done")
    return 0
