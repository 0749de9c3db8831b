"""The result file: the TrainingResult JSON the operator reads from the pod's termination message.

The file is the container's terminationMessagePath, which a real kubelet bind-mounts as a file of
its own: it can be truncated and written but not replaced or removed, so it is written in place.
The kubelet keeps at most `RESULT_MESSAGE_LIMIT` (4096) bytes, so a result that would be longer
sheds its bulkiest optional parts, in the order of `SHEDDING`, until it fits; the ModelVersion keeps
them all (and the baseline is never in the result).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Callable

from kiln.api import trainingjob

Shed = Callable[[trainingjob.TrainingResult], trainingjob.TrainingResult]


def _without_feature_names(result: trainingjob.TrainingResult) -> trainingjob.TrainingResult:
    if result.signature is None:
        return result
    return result.model_copy(update={"signature": result.signature.model_copy(update={"feature_names": []})})


def _without_parameters(result: trainingjob.TrainingResult) -> trainingjob.TrainingResult:
    if result.lineage is None:
        return result
    return result.model_copy(update={"lineage": result.lineage.model_copy(update={"parameters": {}})})


SHEDDING: list[tuple[str, Shed]] = [
    ("signature.featureNames", _without_feature_names),
    ("lineage.parameters", _without_parameters),
    ("signature", lambda result: result.model_copy(update={"signature": None})),
    ("lineage", lambda result: result.model_copy(update={"lineage": None})),
]


def encode(result: trainingjob.TrainingResult) -> bytes:
    return json.dumps(result.to_wire(), separators=(",", ":")).encode()


def fitted(result: trainingjob.TrainingResult) -> tuple[trainingjob.TrainingResult, list[str]]:
    """The result made to fit RESULT_MESSAGE_LIMIT bytes, and the names of the parts it shed."""
    shed: list[str] = []
    for name, drop in SHEDDING:
        if len(encode(result)) <= trainingjob.RESULT_MESSAGE_LIMIT:
            break
        result = drop(result)
        shed.append(name)
    return result, shed


def clear(path: pathlib.Path) -> None:
    """Empty a result a previous run of the container left, so a failure never reports it."""
    if path.exists():
        path.write_bytes(b"")


def write(path: pathlib.Path, result: trainingjob.TrainingResult) -> bytes:
    """Write the result in place; the bytes written."""
    data = encode(result)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as stream:
        stream.write(data)
        stream.flush()
    return data
