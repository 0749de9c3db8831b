"""The `kiln` command (also `python -m kiln`)."""

from __future__ import annotations

import os
import pathlib
import sys

import click

import kiln
from kiln import registry_cli, rollout_cli
from kiln.api import base, crd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Kiln: train, register, gate and ship ML models on Kubernetes."""


for registry_command in registry_cli.COMMANDS:
    main.add_command(registry_command)

for rollout_command in rollout_cli.COMMANDS:
    main.add_command(rollout_command)


@main.command()
def version() -> None:
    """Print Kiln's version and the API version it serves."""
    click.echo(f"kiln {kiln.__version__} (API {base.API_VERSION})")


@main.command()
@click.option(
    "--output-dir",
    "-o",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    default=pathlib.Path("crds"),
    show_default=True,
    help="Where to write one YAML file per CRD.",
)
@click.option("--check", is_flag=True, help="Write nothing; fail if the files differ from the models.")
@click.option("--stdout", "to_stdout", is_flag=True, help="Print all CRDs as one YAML stream instead.")
def crds(output_dir: pathlib.Path, check: bool, to_stdout: bool) -> None:
    """Generate the CustomResourceDefinitions from the typed API."""
    files = crd.rendered_files()
    if to_stdout:
        click.echo("---\n".join(files.values()), nl=False)
        return
    if check:
        stale = [name for name, text in files.items() if _read(output_dir / name) != text]
        if stale:
            click.echo(f"{output_dir} is out of date with kiln.api: {', '.join(stale)}; run `make crds`", err=True)
            sys.exit(1)
        click.echo(f"{output_dir}: {len(files)} CRDs match kiln.api")
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (output_dir / name).write_text(text)
        click.echo(f"wrote {output_dir / name}")


def _read(path: pathlib.Path) -> str | None:
    return path.read_text() if path.exists() else None


@main.command()
@click.option("--namespace", "-n", "namespaces", multiple=True, help="Watch only these namespaces (repeatable).")
@click.option(
    "--liveness",
    "liveness_endpoint",
    default=None,
    help="Serve a liveness probe, e.g. http://0.0.0.0:8080/healthz.",
)
@click.option("--standalone/--peering", default=True, show_default=True, help="Run without kopf peering.")
@click.option(
    "--prometheus-url",
    envvar="KILN_PROMETHEUS_URL",
    default=None,
    help="The Prometheus that analysis metrics without prometheus.address query [env KILN_PROMETHEUS_URL].",
)
@click.option(
    "--metrics-port",
    envvar="KILN_METRICS_PORT",
    type=click.IntRange(0, 65535),
    default=9090,
    show_default=True,
    help="Serve the operator's Prometheus metrics on /metrics at this port; 0 for none [env KILN_METRICS_PORT].",
)
@click.option("--verbose", "-v", is_flag=True, help="Log every handler and API call.")
def run(
    namespaces: tuple[str, ...],
    liveness_endpoint: str | None,
    standalone: bool,
    prometheus_url: str | None,
    metrics_port: int,
    verbose: bool,
) -> None:
    """Run the operator against the current kubeconfig (or in-cluster credentials)."""
    from kiln import handlers

    if prometheus_url:
        os.environ[handlers.PROMETHEUS_URL_ENV] = prometheus_url

    handlers.run_operator(namespaces, liveness_endpoint, standalone, verbose, metrics_port)


@main.group()
def cluster() -> None:
    """The embedded dev cluster: a Kubernetes API server on loopback, for development and tests."""


_DATA_DIR = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=pathlib.Path),
    default=None,
    help="Where objects (SQLite), the kubeconfig and the audit log live [default: ~/.kiln/devcluster].",
)


@cluster.command("start")
@click.option("--port", type=int, default=0, show_default=True, help="The port to serve on; 0 picks a free one.")
@_DATA_DIR
@click.option("--in-memory", is_flag=True, help="Keep objects in memory only; they are gone after stop.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, exists=True, path_type=pathlib.Path),
    help="A YAML file of node pools and kubelet settings (see kiln.devcluster.config).",
)
@click.option("--nodes", type=int, help="Nodes in the one pool the flags describe [default: 1].")
@click.option("--cpus-per-node", default="8", show_default=True, help="CPU capacity of each node.")
@click.option("--memory-per-node", default="32Gi", show_default=True, help="Memory capacity of each node.")
@click.option("--gpus-per-node", type=int, default=0, show_default=True, help="nvidia.com/gpu of each node.")
@click.option("--gpu-product", default="", help="The nvidia.com/gpu.product label, e.g. NVIDIA-H100-80GB-HBM3.")
@click.option("--gpu-taint", is_flag=True, help="Taint GPU nodes nvidia.com/gpu:NoSchedule, as GPU pools usually are.")
@click.option("--prometheus", is_flag=True, help="Also run a real Prometheus (Debian package `prometheus`).")
@click.option(
    "--authorization",
    type=click.Choice(["AlwaysAllow", "RBAC"]),
    default=None,
    help="How requests are authorized: by Roles and bindings, or all allowed [default: RBAC, or the config's].",
)
@click.option(
    "--faults",
    "faults_file",
    type=click.Path(dir_okay=False, exists=True, path_type=pathlib.Path),
    help="Inject API faults: a YAML file of fault rules, the config's `faults:` (see kiln.devcluster.faults).",
)
def cluster_start(
    port: int,
    data_dir: pathlib.Path | None,
    in_memory: bool,
    config_file: pathlib.Path | None,
    nodes: int | None,
    cpus_per_node: str,
    memory_per_node: str,
    gpus_per_node: int,
    gpu_product: str,
    gpu_taint: bool,
    prometheus: bool,
    authorization: str | None,
    faults_file: pathlib.Path | None,
) -> None:
    """Start the dev cluster in the background and write its kubeconfig."""
    from kiln.devcluster import admission_plugins, config, faults
    from kiln.devcluster import cluster as devcluster

    home = data_dir or devcluster.DEFAULT_HOME
    overrides: dict[str, object] = {"prometheus": True if prometheus else None, "authorization": authorization}
    if nodes is not None or gpus_per_node or config_file is None:
        pool = config.pool_from_flags(
            nodes=1 if nodes is None else nodes,
            cpu=cpus_per_node,
            memory=memory_per_node,
            gpus=gpus_per_node,
            gpu_product=gpu_product,
            gpu_taint=gpu_taint,
        )
        overrides["nodePools"] = [pool]
    if faults_file is not None:
        try:
            overrides["faults"] = faults.load_file(faults_file).dump()
        except faults.FaultError as error:
            raise click.ClickException(str(error)) from None
    try:
        settings = config.load(config_file, overrides)
        url = devcluster.start_background(home, port, persist=not in_memory, settings=settings)
    except (RuntimeError, config.ConfigError) as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"dev cluster serving at {url}")
    pools = (f"{p.count} x {p.name} ({p.cpu} cpu, {p.memory}, {p.gpus} gpu)" for p in settings.node_pools)
    click.echo(f"nodes: {', '.join(pools)}")
    click.echo(f"authorization: {settings.authorization}")
    click.echo(f"admission plugins: {', '.join(admission_plugins.ENABLED)}")
    if settings.faults.rules:
        click.echo(f"fault injection: on ({len(settings.faults.rules)} rules)")
    prometheus_url = home / "prometheus-url"
    click.echo(f"export KUBECONFIG={home / 'kubeconfig'}")
    click.echo(f"export KILN_PVC_ROOT={home / 'volumes'}")
    if prometheus_url.exists():
        # The operator's default Prometheus, for analysis metrics that name no address.
        click.echo(f"export KILN_PROMETHEUS_URL={prometheus_url.read_text().strip()}")


@cluster.command("add-node")
@click.argument("name")
@_DATA_DIR
@click.option("--cpu", default="8", show_default=True, help="CPU capacity.")
@click.option("--memory", default="32Gi", show_default=True, help="Memory capacity.")
@click.option("--gpus", type=int, default=0, show_default=True, help="nvidia.com/gpu capacity.")
@click.option("--gpu-product", default="", help="The nvidia.com/gpu.product label.")
@click.option("--label", "labels", multiple=True, help="A node label key=value (repeatable).")
@click.option("--taint", "taints", multiple=True, help="A taint key[=value]:Effect (repeatable).")
def cluster_add_node(
    name: str,
    data_dir: pathlib.Path | None,
    cpu: str,
    memory: str,
    gpus: int,
    gpu_product: str,
    labels: tuple[str, ...],
    taints: tuple[str, ...],
) -> None:
    """Register one more node with a running dev cluster, as a kubelet joining would."""
    from kubernetes import client, config

    from kiln.devcluster import cluster as devcluster
    from kiln.devcluster import config as cluster_config
    from kiln.devcluster import nodes

    try:
        pool = cluster_config.NodePool.model_validate(
            {
                "name": name,
                "cpu": cpu,
                "memory": memory,
                "gpus": gpus,
                "gpuProduct": gpu_product,
                "labels": dict(_pair(label, "=", "--label") for label in labels),
                "taints": [_taint(taint) for taint in taints],
            }
        )
    except ValueError as error:
        raise click.BadParameter(str(error)) from None
    kubeconfig = (data_dir or devcluster.DEFAULT_HOME) / "kubeconfig"
    config.load_kube_config(str(kubeconfig))
    body = nodes.node_object(pool, name)
    try:
        client.CoreV1Api().create_node(body)
    except client.ApiException as error:
        raise click.ClickException(f"node {name} not added: {error.reason} {error.body}") from None
    click.echo(f"node/{name} added")


def _pair(text: str, separator: str, option: str) -> tuple[str, str]:
    key, found, value = text.partition(separator)
    if not found or not key:
        raise click.BadParameter(f"{text!r} is not key{separator}value", param_hint=option)
    return key, value


def _taint(text: str) -> dict[str, str]:
    head, effect = _pair(text, ":", "--taint")
    key, _, value = head.partition("=")
    return {"key": key, "value": value, "effect": effect}


@cluster.command("stop")
@_DATA_DIR
def cluster_stop(data_dir: pathlib.Path | None) -> None:
    """Stop the background dev cluster."""
    from kiln.devcluster import cluster as devcluster

    home = data_dir or devcluster.DEFAULT_HOME
    if not devcluster.stop_background(home):
        raise click.ClickException(f"no dev cluster is running from {home}")
    click.echo("dev cluster stopped")


@cluster.command("kubeconfig")
@_DATA_DIR
def cluster_kubeconfig(data_dir: pathlib.Path | None) -> None:
    """Print the path of the dev cluster's kubeconfig."""
    from kiln.devcluster import cluster as devcluster

    path = (data_dir or devcluster.DEFAULT_HOME) / "kubeconfig"
    if not path.exists():
        raise click.ClickException(f"no kubeconfig at {path}; run `kiln cluster start` first")
    click.echo(str(path))
