"""Safe loading: from a ModelVersion to an estimator the server can call, or the reason it cannot.

The order is the point. The format is checked before a byte is read: joblib and pickle run code
while they load, so they are refused unless the ModelVersion declares that format and the server
was started with an explicit opt-in. The artifact is then copied through `kiln.artifacts` into
the server's cache (an emptyDir in a serving pod), streamed and digested on the way and kept only
when its sha256 is the digest the ModelVersion pins, so a swapped object never reaches a
deserializer; the model is loaded from that verified file, never from a copy in memory, and a
restarted container finds it there instead of downloading it again. A skops file is loaded only
if every type in it that skops does not trust by itself is on the server's explicit trusted-types
list. Last, one trial prediction proves the estimator
answers for the input width it declares, so "ready" means "can serve".
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import pickle
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from kiln import artifacts
from kiln.api import modelversion
from kiln.runtime.server import fastpath, protocol, settings

log = logging.getLogger(__name__)

DEFAULT_TRUSTED_TYPES: Final = (
    # scikit-learn's own compiled data structures, which skops does not trust by itself; they hold
    # arrays and parameters only. Tree ensembles, histogram boosting, neighbours and MLPs need them.
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.metrics._dist_metrics.ManhattanDistance64",
    "sklearn.metrics._dist_metrics.MinkowskiDistance64",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "sklearn.neural_network._stochastic_optimizers.SGDOptimizer",
)
"""The types kiln-server trusts in a skops file beyond skops's own defaults; `--trusted-types` adds more."""

UNSAFE_FORMATS: Final = frozenset({modelversion.ArtifactFormat.JOBLIB, modelversion.ArtifactFormat.PICKLE})
SERVED_FORMATS: Final = frozenset({modelversion.ArtifactFormat.SKOPS}) | UNSAFE_FORMATS

PREDICT_OUTPUT: Final = "predict"
PROBA_OUTPUT: Final = "predict_proba"
DEFAULT_INPUT: Final = "input-0"


class LoadError(Exception):
    """The ModelVersion cannot be served; the message is the reason readiness and the logs give."""


@dataclass(frozen=True)
class LoadPolicy:
    """What the server was told to accept."""

    artifact_settings: artifacts.Settings
    allow_unsafe_formats: bool = False
    trusted_types: frozenset[str] = frozenset(DEFAULT_TRUSTED_TYPES)
    fast_predict: bool = True
    """Whether linear classifiers may take the short predict path (`kiln.runtime.server.fastpath`)."""
    cache_dir: pathlib.Path = field(default_factory=settings.artifact_cache_dir)
    """Where verified artifacts are kept, one file per digest, shared by every version served."""


@dataclass(frozen=True)
class ServedModel:
    """An estimator and how the protocol addresses it."""

    estimator: Any
    predict: fastpath.Predict
    """The estimator's predict, or the same computation without input checks the protocol made."""
    layout: protocol.InputLayout
    predict_name: str
    proba_name: str | None
    """The name of the predict_proba output; None when the estimator has no predict_proba."""
    classes: np.ndarray[Any, Any] | None

    @property
    def output_names(self) -> tuple[str, ...]:
        return (self.predict_name,) if self.proba_name is None else (self.predict_name, self.proba_name)


def load(version: modelversion.ModelVersion, policy: LoadPolicy) -> ServedModel:
    """The served model of `version`; LoadError says why it cannot be served."""
    spec = version.spec
    estimator = _deserialize(_verified_file(version, policy), spec.artifact.format, policy)
    if not callable(getattr(estimator, "predict", None)):
        raise LoadError(f"the artifact holds a {type(estimator).__name__}, which has no predict method")
    return _trial_prediction(_served(estimator, spec, policy.fast_predict))


def _verified_file(version: modelversion.ModelVersion, policy: LoadPolicy) -> pathlib.Path:
    artifact = version.spec.artifact
    if artifact.format not in SERVED_FORMATS:
        raise LoadError(f"format {artifact.format} is not served by kiln-server (it serves skops, joblib and pickle)")
    if artifact.format in UNSAFE_FORMATS and not policy.allow_unsafe_formats:
        raise LoadError(
            f"format {artifact.format} can run code when loaded and is refused; start kiln-server with "
            "--allow-unsafe-formats (KILN_ALLOW_UNSAFE_FORMATS=true) to serve it from a source you trust"
        )
    try:
        return artifacts.cached(
            artifact.uri, artifact.sha256, policy.cache_dir, policy.artifact_settings, version.metadata.namespace
        )
    except artifacts.ArtifactError as error:
        raise LoadError(str(error)) from None


def _deserialize(path: pathlib.Path, artifact_format: modelversion.ArtifactFormat, policy: LoadPolicy) -> Any:
    if artifact_format is modelversion.ArtifactFormat.SKOPS:
        return _load_skops(path, policy.trusted_types)
    try:
        if artifact_format is modelversion.ArtifactFormat.JOBLIB:
            import joblib

            return joblib.load(path)
        # Reached only with --allow-unsafe-formats and after the digest matched.
        with path.open("rb") as stream:
            return pickle.load(stream)
    except Exception as error:
        raise LoadError(f"the {artifact_format} artifact could not be loaded: {error}") from None


def _load_skops(path: pathlib.Path, trusted_types: Collection[str]) -> Any:
    import skops.io

    try:
        found = skops.io.get_untrusted_types(file=path)
    except Exception as error:
        raise LoadError(f"the artifact is not a readable skops file: {error}") from None
    refused = sorted(set(found) - set(trusted_types))
    if refused:
        raise LoadError(
            f"the skops file holds types that are not trusted: {', '.join(refused)}; add them with "
            "--trusted-types only if you trust whoever wrote the artifact"
        )
    try:
        return skops.io.load(path, trusted=list(found))
    except Exception as error:
        raise LoadError(f"the skops artifact could not be loaded: {error}") from None


def _served(estimator: Any, spec: modelversion.ModelVersionSpec, fast_predict: bool) -> ServedModel:
    n_features = getattr(estimator, "n_features_in_", None)
    layout = _layout(spec.signature, n_features if isinstance(n_features, int) else None)
    outputs = spec.signature.outputs if spec.signature else []
    has_proba = callable(getattr(estimator, "predict_proba", None))
    classes = getattr(estimator, "classes_", None)
    return ServedModel(
        estimator=estimator,
        predict=fastpath.predictor(estimator) if fast_predict else estimator.predict,
        layout=layout,
        predict_name=outputs[0].name if outputs else PREDICT_OUTPUT,
        proba_name=(outputs[1].name if len(outputs) > 1 else PROBA_OUTPUT) if has_proba else None,
        classes=classes if isinstance(classes, np.ndarray) else None,
    )


def _layout(signature: modelversion.Signature | None, n_features: int | None) -> protocol.InputLayout:
    if signature is None:
        return protocol.InputLayout(names=None, widths=(n_features,))
    widths = tuple(tensor.shape[-1] if len(tensor.shape) > 1 else 1 for tensor in signature.inputs)
    if any(width < 1 for width in widths):
        raise LoadError("the signature's inputs must give their feature width as the last dimension, [-1, n]")
    if n_features is not None and sum(widths) != n_features:
        raise LoadError(f"the signature's inputs add up to {sum(widths)} features; the estimator takes {n_features}")
    return protocol.InputLayout(names=tuple(tensor.name for tensor in signature.inputs), widths=widths)


def _trial_prediction(served: ServedModel) -> ServedModel:
    """The served model once it has answered for its input width; with its estimator's own predict
    if the short path disagrees with it on any probe row."""
    width = served.layout.n_features
    if width is None:
        return served
    row = np.zeros((1, width))
    try:
        served.estimator.predict(row)
        if served.proba_name is not None:
            served.estimator.predict_proba(row)
    except Exception as error:
        raise LoadError(f"the estimator failed a trial prediction on {width} feature(s): {error}") from None
    if served.predict == served.estimator.predict:
        return served
    probe = np.vstack([row, np.random.default_rng(0).normal(scale=10.0, size=(255, width))])
    if not np.array_equal(served.predict(probe), served.estimator.predict(probe)):
        log.warning("the short predict path disagrees with %s; using its own", type(served.estimator).__name__)
        return dataclasses.replace(served, predict=served.estimator.predict)
    return served


def input_metadata(spec: modelversion.ModelVersionSpec, served: ServedModel | None) -> list[dict[str, Any]]:
    """The model's inputs as the protocol's metadata describes them."""
    if spec.signature is not None:
        return [tensor.model_dump() for tensor in spec.signature.inputs]
    width = served.layout.n_features if served else None
    return [{"name": DEFAULT_INPUT, "datatype": "FP64", "shape": [-1, -1 if width is None else width]}]


def output_metadata(spec: modelversion.ModelVersionSpec, served: ServedModel | None) -> list[dict[str, Any]]:
    """The model's outputs: the signature's, or what the loaded estimator gives."""
    if spec.signature is not None and spec.signature.outputs:
        return [tensor.model_dump() for tensor in spec.signature.outputs]
    if served is None:
        return []
    predict_type = protocol.datatype_of(served.classes) if served.classes is not None else "FP64"
    outputs = [{"name": served.predict_name, "datatype": predict_type, "shape": [-1]}]
    if served.proba_name is not None:
        n_classes = -1 if served.classes is None else len(served.classes)
        outputs.append({"name": served.proba_name, "datatype": "FP64", "shape": [-1, n_classes]})
    return outputs
