"""The Argo CD health checks in charts/kiln/argocd/ under a real Lua, as Argo CD runs them.

Argo CD runs a health check in gopher-lua (Lua 5.1) with only the base and table libraries (and a
safe subset of os) open, the object as the global `obj`, and reads `status` and `message` from the
table the script returns. Here the scripts run in Lua 5.1 (lupa) with the same globals and no string
library, not even as methods on strings, against objects built from the examples and statuses of every
phase made with kiln.api's models, so the shapes are the operator's own.
"""

from __future__ import annotations

import datetime
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

import argocdgen
import pytest
import yaml
from lupa import lua51

from kiln.api import base, modeldeployment, modelversion, trainingjob
from kiln.delivery import reasons

ROOT = pathlib.Path(__file__).resolve().parents[2]
ARGOCD_HEALTH = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
GENERATION = 3
NOW = datetime.datetime(2025, 1, 1, tzinfo=datetime.UTC)

# Argo CD's base library, less what reaches outside the script; `string`, `math` and `io` stay closed.
_SANDBOX = """
local name, script, obj = ...
local env = {
  obj = obj, table = table, assert = assert, error = error, ipairs = ipairs, next = next,
  pairs = pairs, pcall = pcall, select = select, tonumber = tonumber, tostring = tostring,
  type = type, unpack = unpack, xpcall = xpcall,
}
getmetatable("").__index = {}
local chunk, err = loadstring(script, "=" .. name)
if chunk == nil then error(err) end
setfenv(chunk, env)
return chunk()
"""


def _lua_value(runtime: Any, value: Any) -> Any:
    """The value as Argo CD's decodeValue hands it to Lua: objects and arrays become tables."""
    if isinstance(value, Mapping):
        return runtime.table_from({key: _lua_value(runtime, item) for key, item in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_lua_value(runtime, item) for item in value])
    return value


def health(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """What Argo CD shows for the object: the status and message its health check returns."""
    script = (argocdgen.ARGOCD / f"kiln.dev_{kind}.lua").read_text()
    runtime = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    result = runtime.execute(_SANDBOX, f"kiln.dev_{kind}.lua", script, _lua_value(runtime, obj))
    assert lua51.lua_type(result) == "table", f"the {kind} check returned {result!r}, not a table"
    returned = dict(result.items())
    assert set(returned) == {"status", "message"}, returned
    assert returned["status"] in ARGOCD_HEALTH
    assert isinstance(returned["message"], str)
    assert returned["message"]
    return returned


def _example(path: str, kind: str) -> dict[str, Any]:
    docs = yaml.safe_load_all((ROOT / path).read_text())
    return next(doc for doc in docs if doc and doc.get("kind") == kind)


def _ready(status: base.ConditionStatus, reason: str, message: str) -> list[base.Condition]:
    return [
        base.Condition(
            type=reasons.READY,
            status=status,
            reason=reason,
            message=message,
            last_transition_time=NOW,
            observed_generation=GENERATION,
        )
    ]


def _training_job(status: trainingjob.TrainingJobStatus | None) -> dict[str, Any]:
    job = trainingjob.TrainingJob.model_validate(_example("examples/iris-training/trainingjob.yaml", "TrainingJob"))
    job.metadata.generation = GENERATION
    job.status = status
    return job.to_wire()


def _model_version(status: modelversion.ModelVersionStatus | None) -> dict[str, Any]:
    version = modelversion.ModelVersion.model_validate(
        _example("examples/model-registry/modelversion.yaml", "ModelVersion")
    )
    version.metadata.generation = GENERATION
    version.status = status
    return version.to_wire()


def _model_deployment(status: modeldeployment.ModelDeploymentStatus | None) -> dict[str, Any]:
    deployment = modeldeployment.ModelDeployment.model_validate(
        _example("examples/canary-rollout/modeldeployment.yaml", "ModelDeployment")
    )
    deployment.metadata.generation = GENERATION
    deployment.status = status
    return deployment.to_wire()


# -- TrainingJob -------------------------------------------------------------------------------------

TJ = trainingjob.TrainingJobPhase
TRAINING_JOB_HEALTH = {
    TJ.PENDING: ("Progressing", "waiting for the queue"),
    TJ.QUEUED: ("Progressing", "waiting for 4 GPUs in queue default"),
    TJ.ADMITTED: ("Progressing", "admitted; creating 2 workers"),
    TJ.RUNNING: ("Progressing", "2 of 2 workers running"),
    TJ.SUCCEEDED: ("Healthy", "trained; registered ModelVersion iris-1.2.0"),
    TJ.FAILED: ("Degraded", "worker 0 exited 1 after 3 restarts"),
    TJ.SUSPENDED: ("Suspended", "suspended by spec.suspend"),
}


def test_every_training_job_phase_is_mapped() -> None:
    assert set(TRAINING_JOB_HEALTH) == set(TJ)


@pytest.mark.parametrize("phase", list(TJ))
def test_training_job_phases(phase: trainingjob.TrainingJobPhase) -> None:
    expected, message = TRAINING_JOB_HEALTH[phase]
    status = trainingjob.TrainingJobStatus(
        phase=phase,
        message=message,
        observed_generation=GENERATION,
        workers=trainingjob.WorkerCounts(desired=2, active=2, ready=2),
        metrics={"accuracy": 0.97},
    )
    assert health("TrainingJob", _training_job(status)) == {"status": expected, "message": message}


def test_training_job_without_a_message_names_its_phase() -> None:
    status = trainingjob.TrainingJobStatus(phase=TJ.RUNNING)
    assert health("TrainingJob", _training_job(status)) == {
        "status": "Progressing",
        "message": "TrainingJob is Running",
    }


# -- ModelVersion ------------------------------------------------------------------------------------

MV = modelversion.ModelVersionPhase
MODEL_VERSION_HEALTH = {
    MV.PENDING: ("Progressing", "waiting for the artifact"),
    MV.VALIDATING: ("Progressing", "verifying the artifact's digest"),
    MV.VALIDATED: ("Healthy", "every gate passed"),
    MV.REJECTED: ("Degraded", "gate accuracy >= 0.9 failed: 0.85"),
}


def test_every_model_version_phase_is_mapped() -> None:
    assert set(MODEL_VERSION_HEALTH) == set(MV)


@pytest.mark.parametrize("phase", list(MV))
def test_model_version_phases(phase: modelversion.ModelVersionPhase) -> None:
    expected, message = MODEL_VERSION_HEALTH[phase]
    status = modelversion.ModelVersionStatus(
        phase=phase,
        message=message,
        observed_generation=GENERATION,
        conditions=_ready(base.ConditionStatus("True" if phase == MV.VALIDATED else "False"), phase.value, message),
        gate_results=[modelversion.GateResult(metric="accuracy", expected=">= 0.9", actual=0.95, passed=True)],
        approved_by=["alice"],
    )
    assert health("ModelVersion", _model_version(status)) == {"status": expected, "message": message}


# -- ModelDeployment ---------------------------------------------------------------------------------

MD = modeldeployment.ModelDeploymentPhase
MODEL_DEPLOYMENT_HEALTH = {
    MD.PENDING: ("Progressing", "waiting for a servable version"),
    MD.PROGRESSING: ("Progressing", "canary 2.1.0 at 20% (step 2 of 5)"),
    MD.PAUSED: ("Suspended", "paused by spec.paused"),
    MD.HEALTHY: ("Healthy", "serving 2.1.0"),
    MD.DEGRADED: ("Degraded", "no servable version: 2.2.0 has an incompatible signature"),
    MD.ROLLED_BACK: ("Degraded", "rolled back 2.2.0: analysis error-rate failed"),
}


def _deployment_status(phase: modeldeployment.ModelDeploymentPhase, message: str | None, observed: int | None) -> Any:
    return modeldeployment.ModelDeploymentStatus(
        phase=phase,
        message=message,
        observed_generation=observed,
        conditions=_ready(
            base.ConditionStatus("True" if phase == MD.HEALTHY else "False"),
            reasons.ROLLED_BACK if phase == MD.ROLLED_BACK else reasons.HEALTHY,
            message or "",
        ),
        stable_version="2.1.0",
        candidate_version="2.2.0" if phase == MD.PROGRESSING else None,
        weights=modeldeployment.Weights(),
        rolled_back_versions=["2.2.0"] if phase == MD.ROLLED_BACK else [],
        ready_replicas=2,
    )


def test_every_model_deployment_phase_is_mapped() -> None:
    assert set(MODEL_DEPLOYMENT_HEALTH) == set(MD)


@pytest.mark.parametrize("phase", list(MD))
def test_model_deployment_phases(phase: modeldeployment.ModelDeploymentPhase) -> None:
    expected, message = MODEL_DEPLOYMENT_HEALTH[phase]
    obj = _model_deployment(_deployment_status(phase, message, GENERATION))
    assert health("ModelDeployment", obj) == {"status": expected, "message": message}


@pytest.mark.parametrize("observed", [GENERATION - 1, None])
def test_model_deployment_is_healthy_only_once_the_operator_observed_the_spec(observed: int | None) -> None:
    obj = _model_deployment(_deployment_status(MD.HEALTHY, "serving 2.1.0", observed))
    assert health("ModelDeployment", obj) == {
        "status": "Progressing",
        "message": f"waiting for the operator to observe generation {GENERATION}",
    }


def test_a_stale_generation_does_not_hide_a_rollback() -> None:
    obj = _model_deployment(_deployment_status(MD.ROLLED_BACK, "rolled back 2.2.0", GENERATION - 1))
    assert health("ModelDeployment", obj) == {"status": "Degraded", "message": "rolled back 2.2.0"}


def test_model_deployment_rolled_back_without_a_message_says_so() -> None:
    obj = _model_deployment(_deployment_status(MD.ROLLED_BACK, None, GENERATION))
    assert health("ModelDeployment", obj) == {"status": "Degraded", "message": "ModelDeployment is RolledBack"}


# -- every kind --------------------------------------------------------------------------------------

BUILDERS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "TrainingJob": _training_job,
    "ModelVersion": _model_version,
    "ModelDeployment": _model_deployment,
}


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_no_status_waits_for_the_operator(kind: str) -> None:
    obj = BUILDERS[kind](None)
    assert "status" not in obj
    assert health(kind, obj) == {"status": "Progressing", "message": "waiting for the operator"}
    assert health(kind, {**obj, "status": {}}) == {"status": "Progressing", "message": "waiting for the operator"}


@pytest.mark.parametrize("kind", list(BUILDERS))
def test_an_unknown_phase_is_unknown_not_an_error(kind: str) -> None:
    obj = BUILDERS[kind](None)
    obj["status"] = {"phase": "Exploded", "message": "a newer operator"}
    assert health(kind, obj) == {"status": "Unknown", "message": "unknown phase Exploded: a newer operator"}


def test_the_sandbox_has_no_string_library() -> None:
    runtime = lua51.LuaRuntime(register_eval=False, register_builtins=False)
    with pytest.raises(lua51.LuaError):
        runtime.execute(_SANDBOX, "probe", 'return ("x"):upper()', runtime.table())
    with pytest.raises(lua51.LuaError):
        runtime.execute(_SANDBOX, "probe", 'return string.format("%d", 1)', runtime.table())


def test_one_check_per_kind() -> None:
    assert sorted(path.name for path in argocdgen.ARGOCD.glob("*.lua")) == sorted(
        f"kiln.dev_{kind}.lua" for kind in BUILDERS
    )


def test_argocd_cm_patch_matches_the_scripts() -> None:
    assert argocdgen.PATCH.read_text() == argocdgen.patch(), "run `python tests/chart/argocdgen.py`"
    configmap = yaml.safe_load(argocdgen.PATCH.read_text())
    assert configmap["kind"] == "ConfigMap"
    assert configmap["metadata"] == {"name": "argocd-cm"}
    assert configmap["data"] == {
        f"resource.customizations.health.kiln.dev_{kind}": (argocdgen.ARGOCD / f"kiln.dev_{kind}.lua").read_text()
        for kind in BUILDERS
    }
