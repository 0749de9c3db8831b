"""The `kiln` command (also `python -m kiln`)."""

from __future__ import annotations

import pathlib
import sys

import click

import kiln
from kiln import registry_cli
from kiln.api import base, crd


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Kiln: train, register, gate and ship ML models on Kubernetes."""


for registry_command in registry_cli.COMMANDS:
    main.add_command(registry_command)


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
@click.option("--verbose", "-v", is_flag=True, help="Log every handler and API call.")
def run(namespaces: tuple[str, ...], liveness_endpoint: str | None, standalone: bool, verbose: bool) -> None:
    """Run the operator against the current kubeconfig (or in-cluster credentials)."""
    from kiln import handlers

    handlers.run_operator(namespaces, liveness_endpoint, standalone, verbose)


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
def cluster_start(port: int, data_dir: pathlib.Path | None, in_memory: bool) -> None:
    """Start the dev cluster in the background and write its kubeconfig."""
    from kiln.devcluster import cluster as devcluster

    home = data_dir or devcluster.DEFAULT_HOME
    try:
        url = devcluster.start_background(home, port, persist=not in_memory)
    except RuntimeError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"dev cluster serving at {url}")
    click.echo(f"export KUBECONFIG={home / 'kubeconfig'}")


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
