"""The dev cluster decodes kubectl's protobuf bodies with the Kubernetes definitions themselves,
into the JSON the API server would have been sent. The bodies here are encoded with the same
definitions by the protobuf runtime, as kubectl's Go code encodes them."""

from __future__ import annotations

import base64
import datetime
import pathlib
import shutil
from typing import Any

import pytest
from google.protobuf import message, message_factory

from kiln.devcluster import errors, protobuf, protodefs


def new(full_name: str, **fields: Any) -> message.Message:
    message_type = protobuf._pool().FindMessageTypeByName(full_name)
    return message_factory.GetMessageClass(message_type)(**fields)


def envelope(api_version: str, kind: str, obj: message.Message) -> bytes:
    type_meta = new("k8s.io.apimachinery.pkg.runtime.TypeMeta", apiVersion=api_version, kind=kind)
    unknown = new("k8s.io.apimachinery.pkg.runtime.Unknown", typeMeta=type_meta, raw=obj.SerializeToString())
    return protobuf.MAGIC + unknown.SerializeToString()


META = "k8s.io.apimachinery.pkg.apis.meta.v1"


def metadata(name: str, **fields: Any) -> message.Message:
    # Go writes every non-pointer string and the zero creationTimestamp; JSON would leave them out.
    return new(
        f"{META}.ObjectMeta", name=name, generateName="", namespace="", creationTimestamp=new(f"{META}.Time"), **fields
    )


def test_a_deployment_decodes_with_quantities_int_or_strings_and_maps_in_their_json_forms() -> None:
    core = "k8s.io.api.core.v1"
    container = new(
        f"{core}.Container",
        name="web",
        image="nginx",
        ports=[new(f"{core}.ContainerPort", containerPort=80, protocol="TCP")],
        resources=new(
            f"{core}.ResourceRequirements",
            limits={"nvidia.com/gpu": new("k8s.io.apimachinery.pkg.api.resource.Quantity", string="2")},
        ),
    )
    surge = new("k8s.io.apimachinery.pkg.util.intstr.IntOrString", type=1, strVal="25%")
    unavailable = new("k8s.io.apimachinery.pkg.util.intstr.IntOrString", type=0, intVal=0)
    deployment = new(
        "k8s.io.api.apps.v1.Deployment",
        metadata=metadata("web", labels={"app": "web"}),
        spec=new(
            "k8s.io.api.apps.v1.DeploymentSpec",
            replicas=0,
            selector=new(f"{META}.LabelSelector", matchLabels={"app": "web"}),
            strategy=new(
                "k8s.io.api.apps.v1.DeploymentStrategy",
                rollingUpdate=new(
                    "k8s.io.api.apps.v1.RollingUpdateDeployment", maxSurge=surge, maxUnavailable=unavailable
                ),
            ),
            template=new(
                f"{core}.PodTemplateSpec",
                metadata=new(f"{META}.ObjectMeta", labels={"app": "web"}),
                spec=new(f"{core}.PodSpec", containers=[container]),
            ),
        ),
    )

    decoded = protobuf.decode(envelope("apps/v1", "Deployment", deployment))

    assert decoded["apiVersion"] == "apps/v1"
    assert decoded["kind"] == "Deployment"
    assert decoded["metadata"] == {"name": "web", "labels": {"app": "web"}}
    spec = decoded["spec"]
    assert spec["replicas"] == 0  # a pointer set to zero is kept: zero replicas is a wish
    assert spec["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": 0}
    [decoded_container] = spec["template"]["spec"]["containers"]
    assert decoded_container == {
        "name": "web",
        "image": "nginx",
        "ports": [{"containerPort": 80, "protocol": "TCP"}],
        "resources": {"limits": {"nvidia.com/gpu": "2"}},
    }


def test_bytes_are_base64_and_times_are_rfc3339() -> None:
    secret = new("k8s.io.api.core.v1.Secret", metadata=metadata("token"), data={"password": b"hunter2"}, type="Opaque")
    when = int(datetime.datetime(2026, 12, 1, 11, 30, tzinfo=datetime.UTC).timestamp())
    event = new(
        "k8s.io.api.events.v1.Event",
        metadata=metadata("e1"),
        eventTime=new(f"{META}.MicroTime", seconds=when, nanos=250_000_000),
        deprecatedLastTimestamp=new(f"{META}.Time", seconds=when),
        reason="Started",
    )

    decoded_secret = protobuf.decode(envelope("v1", "Secret", secret))
    decoded_event = protobuf.decode(envelope("events.k8s.io/v1", "Event", event))

    assert base64.b64decode(decoded_secret["data"]["password"]) == b"hunter2"
    assert decoded_event["eventTime"] == "2026-12-01T11:30:00.250000Z"
    assert decoded_event["deprecatedLastTimestamp"] == "2026-12-01T11:30:00Z"
    assert decoded_event["reason"] == "Started"


def test_list_wrappers_become_lists() -> None:
    extra = new("k8s.io.api.authorization.v1.ExtraValue", items=["a", "b"])
    review = new(
        "k8s.io.api.authorization.v1.SubjectAccessReview",
        metadata=metadata(""),
        spec=new("k8s.io.api.authorization.v1.SubjectAccessReviewSpec", user="alice", extra={"scopes": extra}),
    )

    decoded = protobuf.decode(envelope("authorization.k8s.io/v1", "SubjectAccessReview", review))

    assert decoded["spec"] == {"user": "alice", "extra": {"scopes": ["a", "b"]}}


def test_a_kind_the_definitions_do_not_describe_is_refused_with_415_naming_it() -> None:
    body = envelope("kiln.dev/v1alpha1", "ModelDeployment", metadata("iris"))

    with pytest.raises(errors.ApiError) as refused:
        protobuf.decode(body)

    assert refused.value.code == 415
    assert "ModelDeployment of kiln.dev/v1alpha1" in str(refused.value)
    assert "kubectl apply -f" in str(refused.value)


@pytest.mark.parametrize(
    ("body", "says"),
    [
        pytest.param(b'{"kind": "Pod"}', "magic number", id="no-magic"),
        pytest.param(protobuf.MAGIC + b"\x0a\xff", "could not be decoded", id="truncated"),
    ],
)
def test_a_body_that_is_not_kubernetes_protobuf_is_a_bad_request(body: bytes, says: str) -> None:
    with pytest.raises(errors.ApiError) as refused:
        protobuf.decode(body)

    assert refused.value.code == 400
    assert says in str(refused.value)


def test_the_definitions_kubectl_carries_number_fields_as_the_stored_ones_do() -> None:
    kubectl = pathlib.Path(shutil.which("kubectl") or "kubectl")

    def deployment_spec(definitions: Any) -> dict[str, int]:
        apps = next(file for file in definitions.file if file.name == "k8s.io/api/apps/v1/generated.proto")
        spec = next(message_type for message_type in apps.message_type if message_type.name == "DeploymentSpec")
        return {field.name: field.number for field in spec.field}

    extracted = protodefs.extract(kubectl.resolve())

    assert deployment_spec(extracted) == deployment_spec(protodefs.load())
    assert {"k8s.io/api/core/v1/generated.proto", "k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto"} <= {
        file.name for file in extracted.file
    }
