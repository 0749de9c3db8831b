"""A small, generic client for the Kubernetes REST API, over the `kubernetes` package's transport.

It speaks paths, not generated models: any group, version and plural is one `Resource`, so the
TrainingJob and ModelVersion controllers use the same get, list, create-or-patch, status and Event
calls. Payloads are the API server's JSON as plain dicts. Writes are merge patches, never blind
replaces. Every failure is an `ApiError` (with `NotFoundError` and `ConflictError` for the two a
caller acts on), unreachable servers included, and no call waits longer than `timeout`.

`Api` is the protocol the controllers are written against; `Client` satisfies it, and so does the
in-memory `kiln.kube.fake.FakeApi` that unit tests drive controllers with.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pathlib
import socket
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import kubernetes
import orjson
import urllib3

from kiln.api import base, resources
from kiln.kube import patches

Object = dict[str, Any]
IN_CLUSTER_NAMESPACE = pathlib.Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
_MERGE_PATCH = "application/merge-patch+json"
_EVENT_MESSAGE_LIMIT = 1024


class ApiError(Exception):
    """The API server refused a request, or could not be reached (status 0)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}" if status else message)
        self.status = status
        self.reason = reason
        self.message = message


class NotFoundError(ApiError):
    pass


class ConflictError(ApiError):
    """The object changed since it was read (a stale resourceVersion), or already exists."""


@dataclass(frozen=True)
class Resource:
    """One kind of the REST API: where its objects live."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None, name: str | None = None, subresource: str | None = None) -> str:
        prefix = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [prefix]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{namespace}")
        parts.append(self.plural)
        parts.extend(part for part in (name, subresource) if part)
        return "/".join(parts)


EVENTS = Resource("", "v1", "events", "Event")
PODS = Resource("", "v1", "pods", "Pod")
SERVICES = Resource("", "v1", "services", "Service")
PERSISTENT_VOLUME_CLAIMS = Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")
SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")
NODES = Resource("", "v1", "nodes", "Node", False)
CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
ROLES = Resource("rbac.authorization.k8s.io", "v1", "roles", "Role")
ROLE_BINDINGS = Resource("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding")
PRIORITY_CLASSES = Resource("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", False)
RESOURCE_QUOTAS = Resource("", "v1", "resourcequotas", "ResourceQuota")
COSCHEDULING_POD_GROUPS = Resource("scheduling.x-k8s.io", "v1alpha1", "podgroups", "PodGroup")
VOLCANO_POD_GROUPS = Resource("scheduling.volcano.sh", "v1beta1", "podgroups", "PodGroup")
HTTP_ROUTES = Resource("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
HORIZONTAL_POD_AUTOSCALERS = Resource("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler")
KNOWN = (
    PODS,
    SERVICES,
    CONFIG_MAPS,
    HORIZONTAL_POD_AUTOSCALERS,
    DEPLOYMENTS,
    PERSISTENT_VOLUME_CLAIMS,
    SERVICE_ACCOUNTS,
    NODES,
    ROLES,
    ROLE_BINDINGS,
    PRIORITY_CLASSES,
    RESOURCE_QUOTAS,
    COSCHEDULING_POD_GROUPS,
    VOLCANO_POD_GROUPS,
    HTTP_ROUTES,
)
SELF_SUBJECT_REVIEWS = Resource("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", False)


def kiln_resource(kind: resources.ResourceKind) -> Resource:
    """The REST resource of a Kiln kind."""
    return Resource(base.GROUP, base.VERSION, kind.plural, kind.kind)


def resource_of(obj: Mapping[str, Any]) -> Resource:
    """The resource of an object built as a dict, from its apiVersion and kind."""
    found = next((r for r in KNOWN if (r.api_version, r.kind) == (obj.get("apiVersion"), obj.get("kind"))), None)
    if found is None:
        raise ValueError(f"no known resource for apiVersion {obj.get('apiVersion')} kind {obj.get('kind')}")
    return found


def _api_error(error: kubernetes.client.ApiException) -> ApiError:
    message = error.reason or ""
    with contextlib.suppress(ValueError, AttributeError):  # a body that is not a Status keeps the reason
        message = json.loads(error.body or "{}").get("message", message)
    status = int(error.status or 0)
    kind = {404: NotFoundError, 409: ConflictError}.get(status, ApiError)
    return kind(status, error.reason or "", message)


def timestamp(moment: datetime.datetime) -> str:
    """A time as the API server writes one (RFC 3339, seconds, UTC)."""
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_patch(obj: Mapping[str, Any], status: Mapping[str, Any]) -> Object:
    """The status-subresource patch turning `obj`'s status into `status`, refused if `obj` is stale."""
    return {
        "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
        "status": patches.merge_patch(obj.get("status") or {}, status),
    }


def event_about(
    involved: Mapping[str, Any],
    event_type: Literal["Normal", "Warning"],
    reason: str,
    message: str,
    *,
    name_suffix: str,
    component: str,
    instance: str,
    now: datetime.datetime,
) -> Object:
    """A core/v1 Event about `involved`, as `kubectl describe` shows them."""
    metadata = involved["metadata"]
    namespace = metadata.get("namespace") or "default"
    when = timestamp(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{metadata['name']}.{name_suffix}", "namespace": namespace},
        "involvedObject": {
            "apiVersion": involved.get("apiVersion"),
            "kind": involved.get("kind"),
            "name": metadata["name"],
            "namespace": namespace,
            "uid": metadata.get("uid"),
            "resourceVersion": metadata.get("resourceVersion"),
        },
        "reason": reason,
        "message": message[:_EVENT_MESSAGE_LIMIT],
        "type": event_type,
        "source": {"component": component},
        "reportingComponent": component,
        "reportingInstance": instance,
        "firstTimestamp": when,
        "lastTimestamp": when,
        "count": 1,
    }


class Api(Protocol):
    """What the controllers use of the API server: `Client`, or `kiln.kube.fake.FakeApi` in tests.

    Both subclass it to inherit `create_or_patch` and `patch_status`, which are made of their own
    `create` and `patch`.
    """

    namespace: str

    def get(self, resource: Resource, namespace: str | None, name: str) -> Object | None: ...

    def list(self, resource: Resource, namespace: str | None, label_selector: str | None = None) -> list[Object]: ...

    def create(self, resource: Resource, body: Mapping[str, Any]) -> Object: ...

    def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        subresource: str | None = None,
    ) -> Object: ...

    def delete(self, resource: Resource, namespace: str | None, name: str, propagation: str | None = None) -> None: ...

    def logs(self, namespace: str, pod: str, container: str | None = None, tail_lines: int = 20) -> str: ...

    def create_or_patch(self, resource: Resource, body: Mapping[str, Any]) -> Object:
        """Create the object, or merge its fields into the one that exists: never a blind replace."""
        metadata = body.get("metadata", {})
        try:
            return self.create(resource, body)
        except ConflictError:
            return self.patch(resource, metadata.get("namespace"), metadata["name"], body)

    def patch_status(self, resource: Resource, obj: Mapping[str, Any], status: Mapping[str, Any]) -> Object:
        """Turn the object's status into `status` through the status subresource: fields that are gone
        are removed, and a write over a newer object than `obj` fails with ConflictError."""
        metadata = obj["metadata"]
        return self.patch(
            resource, metadata.get("namespace"), metadata["name"], status_patch(obj, status), subresource="status"
        )

    def post_event(
        self,
        involved: Mapping[str, Any],
        event_type: Literal["Normal", "Warning"],
        reason: str,
        message: str,
        component: str = "kiln",
    ) -> Object: ...

    def whoami(self) -> str: ...


class Client(Api):
    """Calls to one API server as one user."""

    def __init__(
        self, api_client: kubernetes.client.ApiClient, namespace: str = "default", timeout: float = 30
    ) -> None:
        self._api = api_client
        self.namespace = namespace
        """The namespace of the kubeconfig's context (or the pod's), for callers that name none."""
        self.timeout = timeout

    def _call(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str | None = None,
    ) -> Object:
        return dict(self._request(method, path, body, query, content_type) or {})

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: Mapping[str, str] | None = None,
        content_type: str | None = None,
        *,
        response_type: str = "object",
    ) -> Any:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            result = self._api.call_api(
                path,
                method,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
                response_type=response_type,
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
                _request_timeout=self.timeout,
            )
        except kubernetes.client.ApiException as error:
            raise _api_error(error) from None
        except urllib3.exceptions.HTTPError as error:
            raise self._unreachable(error) from None
        return result

    def get(self, resource: Resource, namespace: str | None, name: str) -> Object | None:
        """The object, or None when there is none."""
        try:
            return self._call("GET", resource.path(namespace, name))
        except NotFoundError:
            return None

    def list_at(
        self, resource: Resource, namespace: str | None, label_selector: str | None = None
    ) -> tuple[list[Object], str]:
        """Every object of the namespace (or of the cluster, with namespace None) the selector
        matches, and the resourceVersion the list shows the cluster at: where a watch of what changed
        since starts."""
        query = {"labelSelector": label_selector} if label_selector else None
        answer = self._call("GET", resource.path(namespace), query=query)
        items: list[Object] = answer.get("items", [])
        for item in items:  # list items come without apiVersion and kind; callers parse whole objects
            item.setdefault("apiVersion", resource.api_version)
            item.setdefault("kind", resource.kind)
        return items, str(answer.get("metadata", {}).get("resourceVersion", ""))

    def list(self, resource: Resource, namespace: str | None, label_selector: str | None = None) -> list[Object]:
        """Every object of the namespace (or of the cluster, with namespace None) the selector matches."""
        return self.list_at(resource, namespace, label_selector)[0]

    def watch(self, resource: Resource, namespace: str | None, version: str, seconds: int) -> Iterator[Object]:
        """The watch events (`{"type": ..., "object": ...}`, bookmarks included) of what changed after
        `version`, until the server ends the watch, after at most `seconds`; an API server silent for
        `timeout` longer than that is taken for gone."""
        query = [
            ("watch", "true"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(seconds)),
        ]
        try:
            response = self._api.call_api(
                resource.path(namespace),
                "GET",
                query_params=query,
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _return_http_data_only=True,
                _request_timeout=(self.timeout, seconds + self.timeout),
            )
        except kubernetes.client.ApiException as error:
            raise _api_error(error) from None
        except urllib3.exceptions.HTTPError as error:
            raise self._unreachable(error) from None
        try:
            pending = b""
            for chunk in response.stream(amt=None, decode_content=False):  # each chunk as it comes
                *lines, pending = (pending + chunk).split(b"\n")
                for line in lines:
                    if line.strip():
                        yield orjson.loads(line)
        except urllib3.exceptions.HTTPError as error:
            raise self._unreachable(error) from None
        finally:
            response.release_conn()

    def _unreachable(self, error: Exception) -> ApiError:
        return ApiError(0, "Unreachable", f"the API server at {self._api.configuration.host} did not answer: {error}")

    def create(self, resource: Resource, body: Mapping[str, Any]) -> Object:
        namespace = body.get("metadata", {}).get("namespace")
        return self._call("POST", resource.path(namespace), body=dict(body))

    def patch(
        self,
        resource: Resource,
        namespace: str | None,
        name: str,
        patch: Mapping[str, Any],
        subresource: str | None = None,
    ) -> Object:
        """A JSON merge patch (RFC 7386); put metadata.resourceVersion in it to refuse a stale write."""
        return self._call(
            "PATCH", resource.path(namespace, name, subresource), body=dict(patch), content_type=_MERGE_PATCH
        )

    def delete(self, resource: Resource, namespace: str | None, name: str, propagation: str | None = None) -> None:
        """Delete the object; one already gone is fine. `propagation` is Background, Foreground or
        Orphan (what happens to the objects it owns)."""
        query = {"propagationPolicy": propagation} if propagation else None
        with contextlib.suppress(NotFoundError):
            self._call("DELETE", resource.path(namespace, name), query=query)

    def logs(self, namespace: str, pod: str, container: str | None = None, tail_lines: int = 20) -> str:
        """The last lines a pod's container logged."""
        query = {"tailLines": str(tail_lines)}
        if container:
            query["container"] = container
        text = self._request("GET", PODS.path(namespace, pod, "log"), query=query, response_type="str")
        return str(text or "")

    def post_event(
        self,
        involved: Mapping[str, Any],
        event_type: Literal["Normal", "Warning"],
        reason: str,
        message: str,
        component: str = "kiln",
    ) -> Object:
        """Record a core/v1 Event about `involved`, as `kubectl describe` shows them."""
        event = event_about(
            involved,
            event_type,
            reason,
            message,
            name_suffix=uuid.uuid4().hex[:16],
            component=component,
            instance=socket.gethostname(),
            now=datetime.datetime.now(datetime.UTC),
        )
        return self.create(EVENTS, event)

    def whoami(self) -> str:
        """The user the API server authenticates this client as (SelfSubjectReview, `kubectl auth whoami`)."""
        review = {"apiVersion": SELF_SUBJECT_REVIEWS.api_version, "kind": SELF_SUBJECT_REVIEWS.kind}
        answer = self._call("POST", SELF_SUBJECT_REVIEWS.path(None), body=review)
        username = answer.get("status", {}).get("userInfo", {}).get("username")
        if not username:
            raise ApiError(0, "NoUser", "the API server's SelfSubjectReview named no user")
        return str(username)


def _kubeconfig_namespace(config_file: str | None, context: str | None) -> str:
    contexts, active = kubernetes.config.list_kube_config_contexts(config_file=config_file)
    chosen = next((entry for entry in contexts if entry["name"] == context), active) if context else active
    return str((chosen or {}).get("context", {}).get("namespace") or "default")


CONNECTIONS = 32
"""Connections kept open to the API server: more than the requests the operator makes at once."""


def connect(
    kubeconfig: str | None = None, context: str | None = None, impersonate: str | None = None, timeout: float = 30
) -> Client:
    """A client from the kubeconfig (`kubeconfig`, else $KUBECONFIG, else ~/.kube/config) or, in a pod
    with none of those, the pod's service account. `impersonate` acts as that user, as `kubectl --as`."""
    config_file = kubeconfig or os.environ.get("KUBECONFIG") or str(pathlib.Path.home() / ".kube" / "config")
    config_file = config_file.split(os.pathsep)[0]
    configuration = kubernetes.client.Configuration()
    if pathlib.Path(config_file).exists():
        kubernetes.config.load_kube_config(config_file=config_file, context=context, client_configuration=configuration)
        namespace = _kubeconfig_namespace(config_file, context)
    else:
        kubernetes.config.load_incluster_config(client_configuration=configuration)
        namespace = IN_CLUSTER_NAMESPACE.read_text().strip() if IN_CLUSTER_NAMESPACE.exists() else "default"
    # The default pool keeps 5 connections per core; the operator's reconciles run more requests at
    # once, and each connection beyond the pool would be opened and closed again for one request.
    configuration.connection_pool_maxsize = CONNECTIONS
    api_client = kubernetes.client.ApiClient(configuration)
    if impersonate:
        api_client.set_default_header("Impersonate-User", impersonate)
    return Client(api_client, namespace, timeout)
