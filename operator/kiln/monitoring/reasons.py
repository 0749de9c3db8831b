"""The condition monitoring sets and the reasons its conditions and Events give, named once."""

from __future__ import annotations

from typing import Final

# The condition.
DRIFT_DETECTED: Final = "DriftDetected"

# Why DriftDetected is what it is.
DRIFTED: Final = "Drifted"
DRIFTING: Final = "Drifting"
"""Over the threshold, but not yet for a whole window."""
NO_DRIFT: Final = "NoDrift"
INSUFFICIENT_SAMPLES: Final = "InsufficientSamples"
NO_BASELINE: Final = "NoBaseline"
MEASUREMENT_ERROR: Final = "MeasurementError"

# Events.
DRIFT_RESOLVED: Final = "DriftResolved"
RETRAINING_STARTED: Final = "RetrainingStarted"
RETRAINING_SKIPPED: Final = "RetrainingSkipped"
RETRAIN_REQUEST_INVALID: Final = "RetrainRequestInvalid"
TRIGGER_ERROR: Final = "TriggerError"

# Why a trigger that fired started nothing (SkippedTrigger.reason).
IN_FLIGHT: Final = "RetrainingInFlight"
COOLDOWN: Final = "Cooldown"
DAILY_CAP: Final = "DailyCap"
