"""The registry's commands: `kiln approve`, `kiln stage`, `kiln models` and `kiln lineage` (of a
ModelVersion, or of a ModelDeployment's retrainings).

They act as the user the API server authenticates (`--as` impersonates, as with kubectl) and ask
the API server who that is (SelfSubjectReview), so approvals and stage requests carry the name the
cluster knows, not one the caller typed.
"""

from __future__ import annotations

import time
from typing import Any

import click
import pydantic
import rich.console
import rich.markup
import rich.table
import rich.tree

from kiln import cli_access, semver
from kiln.api import base, conditions, modeldeployment, modelversion, resources
from kiln.api.modelversion import ModelVersion, ModelVersionPhase, Stage
from kiln.kube import client
from kiln.monitoring import reasons as monitoring_reasons
from kiln.registry import reasons, timeline

MODEL_VERSIONS = client.kiln_resource(resources.MODEL_VERSION)
MODEL_DEPLOYMENTS = client.kiln_resource(resources.MODEL_DEPLOYMENT)
TRAINING_JOBS = client.kiln_resource(resources.TRAINING_JOB)
_MODEL_VERSION_NAMES = frozenset(
    {"mv", "modelversion", "modelversions", "modelversion.kiln.dev", "modelversions.kiln.dev"}
)
_MODEL_DEPLOYMENT_NAMES = frozenset(
    name
    for kind in (
        resources.MODEL_DEPLOYMENT.short_name,
        resources.MODEL_DEPLOYMENT.singular,
        resources.MODEL_DEPLOYMENT.plural,
    )
    for name in (kind, f"{kind}.{base.GROUP}")
)
_CONFLICT_RETRIES = 5
_PHASE_STYLES = {ModelVersionPhase.VALIDATED: "green", ModelVersionPhase.REJECTED: "red"}


def model_version_name(reference: str) -> str:
    """NAME from `mv/NAME`, `modelversion/NAME` (any kubectl spelling) or a bare NAME."""
    kind, separator, name = reference.rpartition("/")
    if separator and kind.lower() not in _MODEL_VERSION_NAMES:
        raise click.BadParameter(f"{reference!r} is not a ModelVersion; name one as mv/NAME")
    if not name:
        raise click.BadParameter(f"{reference!r} names no ModelVersion; name one as mv/NAME")
    return name


def _get_version(kube: client.Api, namespace: str, name: str) -> dict[str, Any]:
    body = kube.get(MODEL_VERSIONS, namespace, name)
    if body is None:
        raise click.ClickException(f'ModelVersion "{name}" not found in namespace {namespace}')
    return body


@click.command()
@click.argument("reference", metavar="mv/NAME")
@click.option("--comment", "-m", default="", help="Why you approve.")
@cli_access.cluster_options
def approve(reference: str, comment: str, access: cli_access.Access) -> None:
    """Approve a ModelVersion for Production, as the user the API server says you are."""
    name = model_version_name(reference)
    kube, namespace = access.connect()
    user = cli_access.whoami(kube)
    approval = modelversion.Approval(approver=user, comment=comment, time=cli_access.now()).to_wire()
    for _ in range(_CONFLICT_RETRIES):
        body = _get_version(kube, namespace, name)
        earlier = body["spec"].get("approvals", [])
        patch = {
            "metadata": {"resourceVersion": body["metadata"]["resourceVersion"]},
            "spec": {"approvals": [*earlier, approval]},
        }
        try:
            kube.patch(MODEL_VERSIONS, namespace, name, patch)
        except client.ConflictError:
            continue  # someone else approved at the same moment: read again and append
        except client.ApiError as error:
            raise click.ClickException(f"could not approve mv/{name}: {error.message}") from None
        approvers = {entry["approver"] for entry in earlier}
        again = " again (an approver counts once)" if user in approvers else ""
        required = body["spec"].get("requiredApprovals", 0)
        count = len(approvers | {user})
        click.echo(f"{user} approved mv/{name}{again}: {count} of {required} required distinct approvals")
        return
    raise click.ClickException(f"mv/{name} kept changing; try again")


def _stage_outcome(kube: client.Api, namespace: str, name: str, generation: int, timeout: float) -> str | None:
    """The registry's answer to the stage request, once the controller has seen it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = _get_version(kube, namespace, name)
        status = modelversion.ModelVersionStatus.model_validate(body.get("status") or {})
        granted = conditions.find(status.conditions, reasons.STAGE_GRANTED)
        if granted is not None and (granted.observed_generation or 0) >= generation:
            refused = granted.reason in (reasons.INVALID_STAGE_TRANSITION, reasons.VERSION_REJECTED)
            if refused:
                raise click.ClickException(f"the registry refused: {granted.message}")
            return granted.message
        time.sleep(0.2)
    return None


@click.command()
@click.argument("reference", metavar="mv/NAME")
@click.argument("stage", metavar="STAGE", type=click.Choice([str(stage) for stage in Stage], case_sensitive=False))
@click.option("--comment", "-m", default="", help="Why.")
@click.option(
    "--wait",
    "wait_seconds",
    type=float,
    default=30,
    show_default=True,
    help="Seconds to wait for the answer; 0 returns at once.",
)
@cli_access.cluster_options
def stage(reference: str, stage: str, comment: str, wait_seconds: float, access: cli_access.Access) -> None:
    """Ask for a ModelVersion to move to STAGE (None, Staging, Production, Archived).

    Sets spec.stage and records who asked in the kiln.dev/stage-request annotation; the registry
    grants the stage, waits (validation, approvals) or refuses it with a reason.
    """
    name = model_version_name(reference)
    wanted = next(candidate for candidate in Stage if candidate.lower() == stage.lower())
    kube, namespace = access.connect()
    request = modelversion.StageRequest(
        stage=wanted, user=cli_access.whoami(kube), time=cli_access.now(), comment=comment
    )
    annotation = request.model_dump_json(by_alias=True, exclude_none=True)
    patch = {
        "metadata": {"annotations": {modelversion.STAGE_REQUEST_ANNOTATION: annotation}},
        "spec": {"stage": str(wanted)},
    }
    try:
        updated = kube.patch(MODEL_VERSIONS, namespace, name, patch)
    except client.NotFoundError:
        raise click.ClickException(f'ModelVersion "{name}" not found in namespace {namespace}') from None
    except client.ApiError as error:
        raise click.ClickException(f"could not ask for stage {wanted}: {error.message}") from None
    click.echo(f"{request.user} asked for mv/{name} to move to {wanted}")
    if wait_seconds <= 0:
        return
    answer = _stage_outcome(kube, namespace, name, int(updated["metadata"].get("generation") or 0), wait_seconds)
    click.echo(answer if answer is not None else f"the registry has not answered within {wait_seconds:g}s")


def _parse_versions(items: list[dict[str, Any]]) -> list[ModelVersion]:
    versions = []
    for item in items:
        try:
            versions.append(ModelVersion.model_validate(item))
        except pydantic.ValidationError as error:
            name = item.get("metadata", {}).get("name")
            click.echo(f"skipping mv/{name}, which does not parse: {error}", err=True)
    return versions


def _key_metrics(version: ModelVersion) -> str:
    """The metrics the gates read, or every metric when there are no gates."""
    gated = list(dict.fromkeys(gate.metric for gate in version.spec.gates)) or sorted(version.spec.metrics)
    return "  ".join(f"{metric}={version.spec.metrics[metric]:g}" for metric in gated if metric in version.spec.metrics)


def size_text(size_bytes: int | None) -> str:
    """`812 B`, `1.4 KiB`, `2.0 GiB`; `-` when the writer recorded no size."""
    if size_bytes is None:
        return "-"
    size, unit = float(size_bytes), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            break
        size /= 1024
    return f"{size_bytes} B" if unit == "B" else f"{size:.1f} {unit}"


def _sort_key(version: ModelVersion) -> tuple[str, str, semver.Version]:
    return (version.metadata.namespace or "", version.spec.model_name, semver.parse(version.spec.version))


def _models_table(versions: list[ModelVersion], all_namespaces: bool) -> rich.table.Table:
    table = rich.table.Table(box=None, header_style="bold")
    if all_namespaces:
        table.add_column("NAMESPACE")
    for column in ("MODEL", "VERSION", "NAME", "PHASE", "STAGE", "APPROVALS", "METRICS", "SIZE", "ARTIFACT"):
        table.add_column(column)
    # Newest version first within each model, as semver orders them.
    for version in sorted(
        sorted(versions, key=_sort_key, reverse=True), key=lambda v: (v.metadata.namespace or "", v.spec.model_name)
    ):
        status = version.status or modelversion.ModelVersionStatus()
        phase = f"[{_PHASE_STYLES.get(status.phase, 'yellow')}]{status.phase}[/]"
        stage_text = f"[bold]{status.stage}[/]" if status.stage == Stage.PRODUCTION else str(status.stage)
        if version.spec.stage != status.stage:
            stage_text += f" → {version.spec.stage}?"
        approvals = f"{len(status.approved_by)}/{version.spec.required_approvals}"
        row = [
            version.spec.model_name,
            version.spec.version,
            version.metadata.name or "",
            phase,
            stage_text,
            approvals,
            _key_metrics(version),
            size_text(version.spec.artifact.size_bytes),
            version.spec.artifact.uri,
        ]
        table.add_row(*([version.metadata.namespace or ""] if all_namespaces else []), *row)
    return table


def _timeline_table(model: str, versions: list[ModelVersion]) -> rich.table.Table:
    table = rich.table.Table(title=f"{model} in Production", box=None, header_style="bold", title_justify="left")
    for column in ("VERSION", "NAME", "SINCE", "UNTIL", "PROMOTED BY"):
        table.add_column(column)
    for period in timeline.production_periods(versions):
        until = f"{period.until:%Y-%m-%d %H:%M:%S}" if period.until else "now"
        table.add_row(period.version, period.name, f"{period.since:%Y-%m-%d %H:%M:%S}", until, period.promoted_by)
    return table


@click.command()
@click.argument("model", required=False)
@click.option("--all-namespaces", "-A", is_flag=True, help="Every namespace.")
@cli_access.cluster_options
def models(model: str | None, all_namespaces: bool, access: cli_access.Access) -> None:
    """List models and their versions: phase, stage, approvals, key metrics, artifact size and URI.

    Naming a MODEL also shows which of its versions was in Production when.
    """
    kube, namespace = access.connect()
    try:
        items = kube.list(MODEL_VERSIONS, None if all_namespaces else namespace)
    except client.ApiError as error:
        raise click.ClickException(f"could not list ModelVersions: {error.message}") from None
    versions = [v for v in _parse_versions(items) if model is None or v.spec.model_name == model]
    console = rich.console.Console()
    if not versions:
        console.print(f"no versions of model {model}" if model else "no ModelVersions")
        return
    console.print(_models_table(versions, all_namespaces))
    if model is not None:
        console.print()
        console.print(_timeline_table(model, versions))


def _serving_roles(deployment: dict[str, Any], model_name: str, version: str) -> list[str]:
    try:
        parsed = modeldeployment.ModelDeployment.model_validate(deployment)
    except pydantic.ValidationError:
        return []
    if parsed.spec.model != model_name:
        return []
    status = parsed.status or modeldeployment.ModelDeploymentStatus()
    roles = {"stable": status.stable_version, "candidate": status.candidate_version, "pinned": parsed.spec.version}
    return [role for role, serving in roles.items() if serving == version]


def _training_branch(tree: rich.tree.Tree, kube: client.Api, namespace: str, version: ModelVersion) -> None:
    lineage = version.spec.lineage
    if lineage.training_job:
        job = kube.get(TRAINING_JOBS, namespace, lineage.training_job)
        phase = job.get("status", {}).get("phase", "Pending") if job else "not found in the cluster"
        branch = tree.add(f"TrainingJob [bold]{lineage.training_job}[/] ({phase})")
        labels = (job or {}).get("metadata", {}).get("labels") or {}
        if modeldeployment.RETRAINING_FOR_LABEL in labels:
            trigger = labels.get(modeldeployment.RETRAINING_TRIGGER_LABEL, "?")
            branch.add(f"retraining of ModelDeployment {labels[modeldeployment.RETRAINING_FOR_LABEL]} ({trigger})")
    else:
        branch = tree.add("trained outside Kiln (no TrainingJob)")
    if lineage.dataset:
        digest = f" sha256:{lineage.dataset.sha256[:12]}" if lineage.dataset.sha256 else ""
        branch.add(f"dataset {lineage.dataset.uri}{digest}")
    if lineage.code:
        branch.add(f"code {lineage.code.repository} @ {lineage.code.commit}")
    if lineage.parameters:
        parameters = branch.add("parameters")
        for key, value in sorted(lineage.parameters.items()):
            parameters.add(f"{key} = {value}")


def _rollout_outcome(deployment: modeldeployment.ModelDeployment, version: str) -> str:
    records = [
        r for r in (deployment.status or modeldeployment.ModelDeploymentStatus()).history if r.version == version
    ]
    if not records:
        return "not rolled out"
    last = records[-1]
    reason = f": {last.reason}" if last.reason else ""
    return f"rollout {last.outcome or 'running'}{reason}"


def _retraining_branch(
    tree: rich.tree.Tree,
    job: dict[str, Any],
    versions: dict[str, dict[str, Any]],
    deployment: modeldeployment.ModelDeployment,
) -> None:
    metadata = job["metadata"]
    trigger = (metadata.get("labels") or {}).get(modeldeployment.RETRAINING_TRIGGER_LABEL, "?")
    reason = (metadata.get("annotations") or {}).get(modeldeployment.RETRAINING_REASON_ANNOTATION, "")
    status = job.get("status") or {}
    branch = tree.add(
        f"trigger [bold]{trigger}[/] at {metadata.get('creationTimestamp', '?')}: {rich.markup.escape(reason)}"
    )
    branch = branch.add(f"TrainingJob [bold]{metadata['name']}[/] ({status.get('phase', 'Pending')})")
    registered = versions.get(status.get("modelVersion") or "")
    if registered is None:
        branch.add("no ModelVersion yet")
        return
    phase = (registered.get("status") or {}).get("phase", "Pending")
    version = registered["spec"]["version"]
    branch = branch.add(f"ModelVersion [bold]{registered['metadata']['name']}[/]: {version} ({phase})")
    branch.add(_rollout_outcome(deployment, version))


def _deployment_lineage(name: str, access: cli_access.Access) -> None:
    """deployment → trigger → TrainingJob → ModelVersion → rollout outcome, for each retraining."""
    kube, namespace = access.connect()
    try:
        body = kube.get(MODEL_DEPLOYMENTS, namespace, name)
        if body is None:
            raise click.ClickException(f'modeldeployment "{name}" not found in namespace "{namespace}"')
        deployment = modeldeployment.ModelDeployment.model_validate(body)
        jobs = kube.list(TRAINING_JOBS, namespace, f"{modeldeployment.RETRAINING_FOR_LABEL}={name}")
        versions = {v["metadata"]["name"]: v for v in kube.list(MODEL_VERSIONS, namespace)}
    except (client.ApiError, pydantic.ValidationError) as error:
        raise click.ClickException(f"could not read the lineage of md/{name}: {error}") from None
    status = deployment.status or modeldeployment.ModelDeploymentStatus()
    drift = conditions.find(status.conditions, monitoring_reasons.DRIFT_DETECTED)
    drifted = f"; DriftDetected {drift.status}: {rich.markup.escape(drift.message)}" if drift else ""
    serving = f"{deployment.spec.model} {status.stable_version or '-'} ({status.phase})"
    tree = rich.tree.Tree(f"ModelDeployment [bold]{name}[/]: {serving}{drifted}")
    jobs.sort(key=lambda job: str(job["metadata"].get("creationTimestamp", "")))
    for job in jobs:
        _retraining_branch(tree, job, versions, deployment)
    if not jobs:
        tree.add("no retrainings yet")
    skipped = (status.retraining or modeldeployment.RetrainingStatus()).skipped
    if skipped is not None:
        tree.add(f"last skipped: trigger {skipped.trigger}, {skipped.reason}: {rich.markup.escape(skipped.message)}")
    rich.console.Console().print(tree)


@click.command()
@click.argument("reference", metavar="mv/NAME|md/NAME")
@cli_access.cluster_options
def lineage(reference: str, access: cli_access.Access) -> None:
    """Where a ModelVersion came from and where it serves: TrainingJob, dataset, code, parameters,
    and the ModelDeployments serving it. For md/NAME, each retraining of the deployment: trigger,
    TrainingJob, ModelVersion and rollout outcome."""
    kind, _, deployment = reference.rpartition("/")
    if kind.lower() in _MODEL_DEPLOYMENT_NAMES:
        _deployment_lineage(deployment, access)
        return
    name = model_version_name(reference)
    kube, namespace = access.connect()
    try:
        version = ModelVersion.model_validate(_get_version(kube, namespace, name))
        deployments = kube.list(MODEL_DEPLOYMENTS, namespace)
    except (client.ApiError, pydantic.ValidationError) as error:
        raise click.ClickException(f"could not read the lineage of mv/{name}: {error}") from None
    status = version.status or modelversion.ModelVersionStatus()
    spec = version.spec
    tree = rich.tree.Tree(
        f"ModelVersion [bold]{name}[/]: {spec.model_name} {spec.version} ({status.phase}, {status.stage})"
    )
    described = str(spec.artifact.format)
    if spec.artifact.size_bytes is not None:
        described += f", {size_text(spec.artifact.size_bytes)}"
    tree.add(f"artifact {spec.artifact.uri} sha256:{spec.artifact.sha256} ({described})")
    _training_branch(tree, kube, namespace, version)
    serving = [(d["metadata"]["name"], _serving_roles(d, spec.model_name, spec.version)) for d in deployments]
    served = [(deployment, roles) for deployment, roles in serving if roles]
    branch = tree.add("served by" if served else "served by no ModelDeployment")
    for deployment, roles in served:
        branch.add(f"ModelDeployment [bold]{deployment}[/] ({', '.join(roles)})")
    rich.console.Console().print(tree)


COMMANDS = (approve, stage, models, lineage)
