"""The demo's stages, each a real step through kubectl and a wait for what the operator does.

The deployment stays on versionPolicy Pin: each version ships when the demo pins spec.version to
it, the retrained one too once it is Validated. A bad version is annotated for fault injection
after it trained, which LatestValidated would race; and after the rollback the deployment stays
RolledBack on its stable version, which monitoring watches for drift as it would a Healthy one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

import yaml
from rich.console import Console
from rich.table import Table

from kiln.demo import display, manifests, observe, stack, traffic

T = TypeVar("T")
WAIT_SECONDS = 150.0
"""The longest any one step may take before the demo gives up and says what it waited for."""
POLL_SECONDS = 1.0


@dataclasses.dataclass
class Outcome:
    """What became of one version, for the summary."""

    version: str
    made_by: str
    accuracy: float | None = None
    gates: str = "-"
    rollout: str = "-"
    reason: str = ""


class Demo:
    """The lifecycle on one Stack, shown on one Display; what became of each version and stage."""

    def __init__(self, demo_stack: stack.Stack, shown: display.Display, crds: pathlib.Path) -> None:
        self.stack = demo_stack
        self.display = shown
        self.crds = crds
        self.stages: list[display.Stage] = []
        self.outcomes: dict[str, Outcome] = {}
        self.observer: observe.Observer | None = None
        self.load: traffic.LoadGenerator | None = None
        self.snapshot = observe.Snapshot()
        self.totals: dict[str, observe.Rates] = {}
        """What Prometheus counted of each version's answers, read before the cluster stops."""

    # -- helpers -------------------------------------------------------------------------------

    def _shown_path(self, path: pathlib.Path) -> str:
        try:
            return str(path.relative_to(pathlib.Path.cwd()))
        except ValueError:
            return str(path)

    def kubectl(self, *args: str) -> str:
        self.display.command(shlex.join(["kubectl", *args]))
        result = subprocess.run(["kubectl", *args], env=self.stack.env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise stack.DemoError(f"kubectl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def kiln(self, *args: str) -> str:
        """The `kiln` command, its tables laid out wide enough not to wrap."""
        environment = {**self.stack.env, "COLUMNS": "160"}
        command = [sys.executable, "-m", "kiln", *args]
        result = subprocess.run(command, env=environment, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise stack.DemoError(f"kiln {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def apply(self, manifest: dict[str, Any]) -> None:
        """Write the manifest under the data directory, where it stays to read, and apply it."""
        directory = self.stack.data_dir / "manifests"
        directory.mkdir(exist_ok=True)
        path = directory / f"{manifest['kind'].lower()}-{manifest['metadata']['name']}.yaml"
        path.write_text(yaml.safe_dump(manifest, sort_keys=False))
        self.kubectl("apply", "-f", self._shown_path(path))

    def patch(self, spec: dict[str, Any]) -> None:
        self.kubectl("patch", "md", manifests.DEPLOYMENT, "--type", "merge", "-p", json.dumps({"spec": spec}))

    def refresh(self) -> observe.Snapshot:
        if self.observer is not None:
            self.snapshot = self.observer.snapshot()
            self.display.show(self.snapshot)
        return self.snapshot

    def wait(self, what: str, check: Callable[[observe.Snapshot], T | None]) -> T:
        """Poll the cluster once a second until `check` gives something; stop with `what` after WAIT_SECONDS."""
        deadline = time.monotonic() + WAIT_SECONDS
        while True:
            found = check(self.refresh())
            if found:
                return found
            if time.monotonic() > deadline:
                raise stack.DemoError(
                    f"gave up after {WAIT_SECONDS:g}s waiting for {what}; see {self.stack.operator_log}"
                )
            time.sleep(POLL_SECONDS)

    def stage(self, title: str, about: str) -> display.Stage:
        if self.stages and self.stages[-1].ended is None:
            self.stages[-1].ended = time.monotonic()
        stage = display.Stage(title, time.monotonic())
        self.stages.append(stage)
        self.display.stage(stage, about)
        return stage

    def train(self, version: str, regularization: float) -> str:
        """Apply the version's TrainingJob and wait until its ModelVersion passed its gates; its name."""
        manifest = manifests.training_job(version, regularization)
        self.apply(manifest)
        return self.trained(manifest["metadata"]["name"], version, "you")

    def trained(self, job: str, version: str, made_by: str) -> str:
        """Wait until the job's ModelVersion passed its gates (it is judged while the job's pod is
        still on its way out); its name."""
        name = f"{manifests.MODEL}-{version}"
        self.display.hint(f"kubectl wait --for=condition=Ready mv/{name}")

        def judged(snapshot: observe.Snapshot) -> dict[str, Any] | None:
            status = snapshot.job(job).get("status") or {}
            if status.get("phase") == "Failed":
                raise stack.DemoError(f"tj/{job} failed: {status.get('message')}")
            return _in_phase(snapshot.version(name), "Validated", "Rejected")

        passed = self.wait(f"mv/{name} to pass its gates", judged)
        accuracy = passed["spec"].get("metrics", {}).get("accuracy")
        self.outcomes[version] = Outcome(version, f"tj/{job} ({made_by})", accuracy, observe.phase(passed))
        if observe.phase(passed) != "Validated":
            message = (passed.get("status") or {}).get("message")
            raise stack.DemoError(f"mv/{name} was {observe.phase(passed)}: {message}")
        self.display.note(f"mv/{name} Validated: accuracy {accuracy:.3f} passes the gate >= 0.9")
        return name

    def rolled_out(self, version: str, outcome: str) -> dict[str, Any]:
        """Wait until the rollout of `version` ended as `outcome`; its record."""

        def ended(snapshot: observe.Snapshot) -> dict[str, Any] | None:
            record = snapshot.rollout_of(version)
            if record.get("outcome") and record["outcome"] != outcome:
                raise stack.DemoError(f"the rollout of {version} ended {record['outcome']}: {record.get('reason')}")
            steady = snapshot.status.get("phase") in ("Healthy", "RolledBack")
            return record if record.get("outcome") == outcome and steady else None

        record = self.wait(f"the rollout of {version} to end {outcome}", ended)
        self.outcomes[version].rollout = outcome
        self.outcomes[version].reason = str(record.get("reason") or "")
        return record

    # -- stages --------------------------------------------------------------------------------

    def start(self) -> None:
        stage = self.stage("Start", "a dev cluster (2 CPU nodes, 1 simulated GPU node), Prometheus, the CRDs, kiln run")
        data = self._shown_path(self.stack.data_dir)
        self.display.command(f"kiln cluster start --data-dir {data} --config {data}/config.yaml")
        url = self.stack.start_cluster()
        self.display.note(f"dev cluster at {url}, Prometheus at {self.stack.prometheus_url}")
        self.display.note(f"export KUBECONFIG={self.stack.kubeconfig} KILN_PVC_ROOT={self.stack.volumes}")
        for line in self.kubectl("get", "nodes", "-L", "nvidia.com/gpu.product").splitlines():
            self.display.note(line)
        self.kubectl("apply", "-f", self._shown_path(self.crds))
        self.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        self.display.command(f"kiln run --prometheus-url {self.stack.prometheus_url} &")
        self.stack.start_operator()
        self.observer = observe.Observer(str(self.stack.kubeconfig), self.stack.prometheus_url)
        stage.outcome = "operator running"

    def serve_first(self) -> None:
        stage = self.stage(
            f"Train and serve {manifests.FIRST}",
            "a TrainingJob fits iris; its ModelVersion's gates; a ModelDeployment serves it",
        )
        self.train(manifests.FIRST, 1.0)
        self.apply(manifests.model_deployment())
        self.rolled_out(manifests.FIRST, "Deployed")
        service = self.kubectl("get", "service", manifests.DEPLOYMENT, "-o", "jsonpath={.spec.clusterIP}").strip()
        self.load = traffic.LoadGenerator(f"http://{service}", manifests.MODEL)
        self.load.start()
        self.display.note(
            f"load generator: POST http://{service}/v2/models/iris/infer, {traffic.ROWS_PER_REQUEST} flowers a request"
        )
        self.display.hint("python examples/traffic.py --name iris --seconds 600   # live traffic of your own")
        self.wait(f"{manifests.FIRST} to answer through the router", lambda _: self._answered(manifests.FIRST) >= 20)
        stage.outcome = f"{manifests.FIRST} serving"

    def _answered(self, version: str) -> int:
        assert self.load is not None
        return self.load.answers[(version, 200)]

    def canary(self) -> None:
        stage = self.stage(
            f"Canary {manifests.CANDIDATE}",
            "train a second version; it ships 20% → 50% → 100% while Prometheus judges its error rate",
        )
        self.train(manifests.CANDIDATE, 0.5)
        self.patch({"version": manifests.CANDIDATE})
        self.display.hint("kiln status md/iris --watch   # steps, weights and measurements")
        self.rolled_out(manifests.CANDIDATE, "Promoted")
        stage.outcome = f"{manifests.CANDIDATE} Promoted"

    def rollback(self) -> None:
        stage = self.stage(
            f"Bad {manifests.BAD}",
            "a version whose kiln-server fails half its requests; the canary's analysis rolls it back",
        )
        name = self.train(manifests.BAD, 2.0)
        self.kubectl("annotate", "mv", name, f"kiln.dev/fault-injection={manifests.FAULT}")
        self.patch({"version": manifests.BAD})
        record = self.rolled_out(manifests.BAD, "RolledBack")
        self.display.note(f"RolledBack: {record.get('reason')}")
        self.display.command("kiln history md/iris")
        for line in self.kiln("history", "md/iris").splitlines():
            self.display.note(line)
        stage.outcome = f"{manifests.BAD} RolledBack"

    def drift(self) -> None:
        stage = self.stage(
            "Drift and retraining",
            f"the traffic shifts; drift on {manifests.CANDIDATE} is detected, a retraining TrainingJob starts"
            " and its version ships by canary",
        )
        uri = f"pvc://{manifests.STORE_CLAIM}/{manifests.SHIFTED_DATASET}"
        target = self.stack.volumes / manifests.NAMESPACE / manifests.STORE_CLAIM / manifests.SHIFTED_DATASET
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(traffic.shifted_dataset())
        self.display.note(f"the shifted data retraining learns from: {uri}")
        assert self.load is not None
        self.load.shifted = True
        self.display.note(
            "traffic shifts: every flower's features move by " + ", ".join(f"+{v:g}" for v in traffic.SHIFT)
        )
        self.wait("DriftDetected", lambda s: s.condition("DriftDetected") == "True")
        drift = self.snapshot.status.get("drift") or {}
        self.display.note(
            f"DriftDetected: psi {drift.get('score', 0):.2f} on {drift.get('feature')} over {drift.get('threshold')}"
        )
        self.display.hint("kubectl get md iris -o jsonpath='{.status.drift}'")
        run = self.wait(
            "the retraining TrainingJob", lambda s: ((s.status.get("retraining") or {}).get("runs") or [None])[-1]
        )
        self.display.note(f"the operator started tj/{run['trainingJob']}: {run['reason']}")
        self.display.hint(f"kubectl get tj {run['trainingJob']} -o yaml")
        self.trained(run["trainingJob"], run["version"], f"retraining, trigger {run['trigger']}")
        # The deployment is pinned: the retrained version ships as any other, by the canary.
        self.patch({"version": run["version"]})
        self.rolled_out(run["version"], "Promoted")
        self.display.hint("kiln lineage md/iris   # trigger → TrainingJob → ModelVersion → rollout")
        stage.outcome = f"{run['version']} Promoted"

    def run(self) -> None:
        self.start()
        self.serve_first()
        self.canary()
        self.rollback()
        self.drift()
        self.stages[-1].ended = time.monotonic()

    def finish(self) -> None:
        """Stop the traffic and read what Prometheus counted, while the cluster still runs."""
        if self.load is not None:
            self.load.stop()
        if self.observer is not None:
            self.totals = self.observer.totals()
            self.observer.close()

    # -- summary -------------------------------------------------------------------------------

    def summary(self, console: Console, kept: bool) -> None:
        versions = Table(
            "version", "made by", "accuracy", "gates", "rollout", "answered", "5xx", "reason", title="Versions"
        )
        for outcome in self.outcomes.values():
            answered = self.totals.get(outcome.version, observe.Rates(0, 0))
            accuracy = f"{outcome.accuracy:.3f}" if outcome.accuracy is not None else "-"
            row = (outcome.version, outcome.made_by, accuracy, outcome.gates, outcome.rollout)
            versions.add_row(*row, f"{answered.requests:.0f}", f"{answered.errors:.0f}", outcome.reason)
        if self.load is not None:
            versions.caption = f"answers as Prometheus counted them; the load generator sent {self.load.sent} requests"
        console.print(versions)
        stages = Table("stage", "took", "outcome", title="Stages")
        for stage in self.stages:
            stages.add_row(stage.title, f"{stage.seconds:.0f}s", stage.outcome)
        total = sum(stage.seconds for stage in self.stages)
        stages.caption = f"{total:.0f}s in all"
        console.print(stages)
        kubeconfig = self._shown_path(self.stack.kubeconfig)
        explore = [
            f"kubectl --kubeconfig {kubeconfig} get kiln",
            f"KUBECONFIG={kubeconfig} kiln history md/iris   (kiln lineage md/iris, kiln models, kiln status md/iris)",
        ]
        if kept:
            lines = [*explore, f"Prometheus: {self.stack.prometheus_url}   (kiln_server_requests_total, ...)"]
            lines.append("make demo-down   # stops the cluster, Prometheus and the operator")
        else:
            lines = ["everything the demo started is stopped; `make demo KEEP=1` keeps it up, to explore with:"]
            lines += [f"  {line}" for line in explore] + ["  and Prometheus, then `make demo-down`"]
        lines += [
            f"the manifests applied: {self._shown_path(self.stack.data_dir / 'manifests')}/",
            f"the operator's log: {self._shown_path(self.stack.operator_log)}",
            "README.md, section `make demo`: each step by hand with kubectl, or on a real cluster with Helm",
        ]
        console.print("Where to look next:\n  " + "\n  ".join(lines))


def _in_phase(obj: dict[str, Any], *phases: str) -> dict[str, Any] | None:
    return obj if observe.phase(obj) in phases else None


def plain() -> bool:
    return os.environ.get("KILN_DEMO_PLAIN", "") not in ("", "0")
