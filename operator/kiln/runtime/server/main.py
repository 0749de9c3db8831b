"""`kiln-server`: the command, start-up (listen at once, load models on a thread) and shutdown.

On SIGTERM (or SIGINT) readiness turns 503 first; the server keeps answering for `--drain-delay`
seconds so Endpoints and load balancers stop sending it traffic, then stops accepting, waits up
to `--shutdown-timeout` for the requests in flight to finish, and exits 0.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import pathlib
import sys

import click

from kiln import artifacts
from kiln.api import modelversion
from kiln.runtime import process
from kiln.runtime.server import app, feedback, loading, repository, settings
from kiln.runtime.server import metrics as server_metrics

log = logging.getLogger("kiln.runtime.server")


def _configure_sklearn() -> None:
    import warnings

    import sklearn

    # The protocol layer has already refused non-finite inputs, so scikit-learn's own scan is waste.
    sklearn.set_config(assume_finite=True)
    # Columns arrive in the signature's order as a plain array; the warning would fire per request.
    warnings.filterwarnings("ignore", message="X does not have valid feature names")


async def _load_all(server: app.InferenceServer, policy: loading.LoadPolicy) -> None:
    loop = asyncio.get_running_loop()
    for slot in server.models.slots:
        try:
            slot.served = await loop.run_in_executor(server.executor, loading.load, slot.version, policy)
        except loading.LoadError as error:
            slot.state, slot.reason = repository.State.FAILED, str(error)
            log.error("model %s %s will not be served: %s", slot.name, slot.number, error)
        except Exception as error:
            slot.state, slot.reason = repository.State.FAILED, f"loading failed: {type(error).__name__}: {error}"
            log.exception("model %s %s failed to load", slot.name, slot.number)
        else:
            slot.state, slot.reason = repository.State.READY, ""
            log.info("model %s %s is ready (%s)", slot.name, slot.number, slot.version.spec.artifact.uri)
        server.mark_loaded(slot)
    if server.models.ready:
        log.info("all %d model version(s) ready", len(server.models.slots))


async def serve(
    config: settings.ServerSettings,
    versions: list[modelversion.ModelVersion],
    feedback_limits: feedback.Limits | None = None,
) -> int:
    _configure_sklearn()
    stop = process.stop_on_signals()
    policy = loading.LoadPolicy(
        artifact_settings=artifacts.Settings.from_environment(),
        allow_unsafe_formats=config.allow_unsafe_formats,
        trusted_types=frozenset(loading.DEFAULT_TRUSTED_TYPES) | frozenset(config.extra_trusted_types),
        fast_predict=config.fast_predict,
    )
    with concurrent.futures.ThreadPoolExecutor(
        max_workers=2, thread_name_prefix="kiln-predict", initializer=_configure_sklearn
    ) as executor:
        server = app.InferenceServer(
            repository.Repository(versions), server_metrics.ServerMetrics(), config, executor, feedback_limits
        )
        runner = await process.listen(
            server.handle, app.request_factory(config.max_body_bytes), config.host, config.port, config.shutdown_timeout
        )
        log.info("kiln-server listening on %s:%d", config.host, config.port)
        if config.faults.active:
            log.warning("fault injection is on: %s", config.faults)
        loader = asyncio.create_task(_load_all(server, policy))
        await stop.wait()
        server.draining = True
        await process.drain(runner, config.drain_delay, log)
        if not loader.done():
            loader.cancel()
        log.info("stopped")
    return 0


DEFAULTS = settings.ServerSettings()


@click.command(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": None})
@click.option(
    "--model-version",
    "model_version_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=pathlib.Path),
    help="A ModelVersion manifest (YAML or JSON) to serve; repeatable. KILN_MODEL_VERSIONS adds a JSON list.",
)
@process.host_option(DEFAULTS.host, "KILN_SERVER_HOST")
@process.port_option(DEFAULTS.port, "KILN_SERVER_PORT")
@click.option(
    "--allow-unsafe-formats",
    is_flag=True,
    envvar="KILN_ALLOW_UNSAFE_FORMATS",
    help="Serve joblib and pickle artifacts, which can run code when loaded (only where the ModelVersion says so).",
)
@click.option(
    "--max-body-bytes",
    default=DEFAULTS.max_body_bytes,
    type=click.IntRange(min=1),
    envvar="KILN_MAX_BODY_BYTES",
    show_default=True,
    help="Largest request body accepted; larger ones get 413.",
)
@click.option(
    "--max-batch-size",
    default=DEFAULTS.max_batch_size,
    type=click.IntRange(min=0),
    envvar="KILN_MAX_BATCH_SIZE",
    show_default=True,
    help="Most rows one inference request may carry (a ModelDeployment's spec.server.maxBatchSize); 0: no limit.",
)
@click.option(
    "--trusted-types",
    default="",
    envvar="KILN_TRUSTED_TYPES",
    help="Comma-separated types to trust in skops files, beyond skops's defaults and scikit-learn's tree structures.",
)
@process.drain_delay_option(
    DEFAULTS.drain_delay, "KILN_DRAIN_DELAY", "Seconds to keep serving after SIGTERM with readiness off."
)
@click.option(
    "--shutdown-timeout",
    default=DEFAULTS.shutdown_timeout,
    type=click.FloatRange(min=0),
    envvar="KILN_SHUTDOWN_TIMEOUT",
    show_default=True,
    help="Seconds to wait for in-flight requests once no longer accepting.",
)
@click.option(
    "--fast-predict/--no-fast-predict",
    default=True,
    envvar="KILN_FAST_PREDICT",
    show_default=True,
    help="Let linear classifiers skip scikit-learn's input checks, which the server has already made.",
)
@click.option(
    "--feedback-max-predictions",
    default=feedback.DEFAULT_MAX_PREDICTIONS,
    type=click.IntRange(min=1),
    envvar="KILN_FEEDBACK_MAX_PREDICTIONS",
    show_default=True,
    help="Predicted rows (of requests with an id) remembered for ground truth posted to .../feedback.",
)
@click.option(
    "--feedback-max-age",
    default=feedback.DEFAULT_MAX_AGE_SECONDS,
    type=click.FloatRange(min=0, min_open=True),
    envvar="KILN_FEEDBACK_MAX_AGE",
    show_default=True,
    help="Seconds a prediction waits for its ground truth; a later truth is answered 410 (late).",
)
@process.log_level_option()
def main(
    model_version_files: tuple[pathlib.Path, ...],
    host: str,
    port: int,
    allow_unsafe_formats: bool,
    max_body_bytes: int,
    max_batch_size: int,
    trusted_types: str,
    drain_delay: float,
    shutdown_timeout: float,
    fast_predict: bool,
    feedback_max_predictions: int,
    feedback_max_age: float,
    log_level: str,
) -> None:
    """Serve ModelVersions over the Open Inference Protocol v2, with Prometheus metrics at /metrics.

    Fault injection, for tests and demos only, is off unless KILN_FAULT_INJECTION holds JSON such as
    {"errorRate": 0.3, "errorStatus": 500, "delayRate": 0.5, "delaySeconds": 0.2}.
    """
    process.configure_logging(log_level)
    try:
        versions = settings.model_versions(model_version_files, os.environ.get("KILN_MODEL_VERSIONS"))
        config = settings.ServerSettings(
            host=host,
            port=port,
            allow_unsafe_formats=allow_unsafe_formats,
            max_body_bytes=max_body_bytes,
            max_batch_size=max_batch_size,
            extra_trusted_types=tuple(name.strip() for name in trusted_types.split(",") if name.strip()),
            faults=settings.FaultInjection.parse(os.environ.get("KILN_FAULT_INJECTION")),
            drain_delay=drain_delay,
            shutdown_timeout=shutdown_timeout,
            fast_predict=fast_predict,
        )
    except settings.SettingsError as error:
        raise click.UsageError(str(error)) from None
    limits = feedback.Limits(max_predictions=feedback_max_predictions, max_age=feedback_max_age)
    sys.exit(process.run(serve(config, versions, limits)))
