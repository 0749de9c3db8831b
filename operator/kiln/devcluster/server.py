"""The HTTP face of the dev cluster: the Kubernetes REST API over aiohttp.

Paths, verbs, query parameters, content types, watch streams, discovery,
Table output for kubectl, and `Status` errors follow kube-apiserver, so that
kubectl, the `kubernetes` client and kopf work against it unmodified.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import contextvars
import json
import logging
import pathlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import yaml
from aiohttp import web

from kiln.devcluster import (
    access,
    admission_plugins,
    discovery,
    errors,
    faults,
    identity,
    kinds,
    openapi,
    patch,
    protobuf,
    registry,
    selectors,
    store,
    tables,
    webhooks,
)

log = logging.getLogger(__name__)

Object = dict[str, Any]
LogReader = Callable[[str, str, str | None, int | None, bool], str]
"""(namespace, pod, container, tailLines, previous) -> the pod's log text."""
LogFollower = Callable[[str, str, str | None], AsyncIterator[str]]
"""(namespace, pod, container) -> what the running container writes next, until it stops."""

BOOKMARK_INTERVAL_SECONDS = 5.0
DEFAULT_WATCH_TIMEOUT_SECONDS = 1800
_WATCH_CUT: contextvars.ContextVar[faults.WatchCut | None] = contextvars.ContextVar("watch_cut", default=None)
"""The injected cut of the watch the request being served starts, if any; set for every request."""


@dataclass(frozen=True)
class Target:
    """What a request path names."""

    resource: kinds.ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None
    watch_path: bool


class ApiServer:
    """The REST API over a Registry; `app` is the aiohttp application to serve."""

    def __init__(
        self,
        cluster: registry.Registry,
        audit_log: pathlib.Path | None = None,
        authorization: str = "AlwaysAllow",
        fault_config: faults.FaultConfig | None = None,
    ) -> None:
        self.registry = cluster
        self.faults = faults.Injector(fault_config)
        self.access = access.Access(cluster, authorization)
        self.audit_log = audit_log.open("a", buffering=1) if audit_log else None
        self.log_reader: LogReader = lambda namespace, pod, container, tail, previous: ""
        self.log_follower: LogFollower | None = None
        self.stopping = asyncio.Event()
        self.webhooks = webhooks.Dispatcher(cluster)
        self.app = web.Application(client_max_size=16 * 1024 * 1024)
        self.app.router.add_route("*", "/{path:.*}", self.handle)

    def close(self) -> None:
        self.stopping.set()
        self.registry.store.close_watches()
        if self.audit_log:
            self.audit_log.close()

    # dispatch

    async def handle(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self._dispatch(request)
        except errors.ApiError as error:
            headers = error.headers if isinstance(error, faults.InjectedError) else None
            return web.json_response(error.status(), status=error.code, headers=headers)
        except Exception:  # a bug must answer like kube-apiserver does, not drop the connection
            log.exception("internal error serving %s %s", request.method, request.path)
            internal = errors.ApiError(500, "InternalError", "an internal error occurred in the dev cluster")
            return web.json_response(internal.status(), status=500)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        parts = [part for part in request.path.split("/") if part]
        groups = request.headers.getall("Impersonate-Group", [])
        user = self.access.admit(request.headers, groups, request.method, request.path, request.query)
        static = self._static(request, parts)
        if static is not None:
            return static
        target = self._target(parts)
        if target is None:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        verb = self._verb(request, target)
        injection = self.faults.decide(_fault_request(verb, target))
        self._audit(request, user, verb, target, injection.annotations if injection else None)
        if injection is not None:
            await _inject(injection)
        _WATCH_CUT.set(injection.watch if injection else None)
        if target.resource.kind == "SelfSubjectReview" and verb == "create":
            return web.json_response(identity.self_subject_review(user), status=201)
        if self.access.reviews(target.resource) and verb == "create":
            reviewed = self.access.review(target.resource.kind, target.namespace or "", user, await _body(request))
            return web.json_response(reviewed, status=201)
        if verb not in target.resource.verbs:
            raise errors.method_not_allowed(f"the server does not allow this method on the requested resource ({verb})")
        return await self._admitted(request, user, verb, target)

    async def _admitted(
        self, request: web.Request, user: identity.UserInfo, verb: str, target: Target
    ) -> web.StreamResponse:
        """Serve with who asks known to admission; warnings it gives go back as Warning headers."""
        dry_run = request.query.get("dryRun") == "All"
        with admission_plugins.requesting(user, target.resource.key, dry_run) as context:
            try:
                response = await self._serve(request, verb, target)
            except errors.ApiError as error:
                if not context.warnings:
                    raise
                response = web.json_response(error.status(), status=error.code)
        for warning in context.warnings:
            response.headers.add("Warning", '299 - "' + warning.replace('"', "'") + '"')
        if context.annotations and self.audit_log:
            entry = {"verb": verb, "user": user.username, "name": target.name, "annotations": context.annotations}
            self.audit_log.write(json.dumps(entry) + "\n")
        return response

    def _static(self, request: web.Request, parts: list[str]) -> web.StreamResponse | None:
        path = "/" + "/".join(parts)
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/version":
            return web.json_response(discovery.VERSION_INFO)
        if parts[:1] == ["openapi"]:
            if parts == ["openapi", "v2"] and "json" not in request.headers.get("Accept", "json"):
                return web.Response(body=openapi.V2_PROTOBUF_STUB, content_type=openapi.V2_PROTOBUF)
            document = openapi.document(self.registry.types, parts[1:])
            if document is None:
                raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
            return web.json_response(document)
        document = discovery.document(self.registry.types, parts)
        return web.json_response(document) if document is not None else None

    def _target(self, parts: list[str]) -> Target | None:
        if parts[:2] == ["api", "v1"]:
            group, version, rest = "", "v1", parts[2:]
        elif parts[:1] == ["apis"] and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        watch_path = rest[:1] == ["watch"]
        rest = rest[1:] if watch_path else rest
        if not rest:
            return None
        types = self.registry.types
        if rest[0] == "namespaces" and len(rest) >= 3 and types.get(group, version, rest[2]) is not None:
            resource = types.get(group, version, rest[2])
            assert resource is not None
            name, sub = _at(rest, 3), _at(rest, 4)
            return Target(resource, rest[1], name, sub, watch_path) if len(rest) <= 5 else None
        resource = types.get(group, version, rest[0])
        if resource is None or len(rest) > 3:
            return None
        return Target(resource, None, _at(rest, 1), _at(rest, 2), watch_path)

    @staticmethod
    def _verb(request: web.Request, target: Target) -> str:
        method = request.method
        if method == "GET":
            if target.watch_path or request.query.get("watch", "").lower() in ("1", "true"):
                return "watch"
            return "get" if target.name else "list"
        if method == "DELETE":
            return "delete" if target.name else "deletecollection"
        verbs = {"POST": "create", "PUT": "update", "PATCH": "patch"}
        if method not in verbs:
            raise errors.method_not_allowed("the server does not allow this method on the requested resource")
        return verbs[method]

    def _audit(
        self,
        request: web.Request,
        user: identity.UserInfo,
        verb: str,
        target: Target,
        annotations: dict[str, str] | None = None,
    ) -> None:
        if not self.audit_log:
            return
        entry = {
            "verb": verb,
            "group": target.resource.group,
            "version": target.resource.version,
            "resource": target.resource.plural,
            "subresource": target.subresource,
            "namespace": target.namespace,
            "name": target.name,
            "user": user.username,
            "groups": list(user.groups),
            "userAgent": request.headers.get("User-Agent", ""),
            "query": dict(request.query),
        }
        if annotations:
            entry["annotations"] = annotations
        self.audit_log.write(_encoded(entry).decode() + "\n")

    async def _serve(self, request: web.Request, verb: str, target: Target) -> web.StreamResponse:
        rt, namespace = target.resource, target.namespace or ""
        if target.subresource and target.subresource not in rt.subresources:
            raise errors.ApiError(404, "NotFound", "the server could not find the requested resource")
        if target.subresource == "log":
            return await self._log(request, target)
        if target.subresource == "scale":
            return await self._scale(request, verb, target)
        if target.subresource == "binding":
            return await self._bind(request, target)
        dry_run = request.query.get("dryRun") == "All"
        strict = request.query.get("fieldValidation", "").lower() == "strict"
        manager = _field_manager(request)
        match verb:
            case "watch":
                return await self._watch(request, target)
            case "list":
                return self._list(request, target)
            case "get":
                assert target.name is not None
                return self._respond(request, rt, self.registry.get(rt, namespace, target.name))
            case "create":
                body = await _body(request)
                created = await self.webhooks.admit(
                    rt, namespace, None,
                    lambda given, preview: self.registry.create(
                        rt, namespace, given or body, dry_run=dry_run or preview, strict=strict, manager=manager
                    ),
                )  # fmt: skip
                return self._respond(request, rt, created, status=201)
            case "update":
                assert target.name is not None
                body = await _body(request)
                name = target.name
                updated = await self.webhooks.admit(
                    rt, namespace, name,
                    lambda given, preview: self.registry.update(
                        rt, namespace, name, given or body, subresource=target.subresource,
                        dry_run=dry_run or preview, strict=strict, manager=manager,
                    ),
                    target.subresource or "",
                )  # fmt: skip
                return self._respond(request, rt, updated)
            case "patch":
                assert target.name is not None
                content_type = request.content_type
                body = await _body(request)
                name = target.name
                patched = await self.webhooks.admit(
                    rt, namespace, name,
                    lambda given, preview: self.registry.patch(
                        rt, namespace, name, content_type, body,
                        subresource=target.subresource, dry_run=dry_run or preview, strict=strict, manager=manager,
                        force=request.query.get("force", "").lower() == "true",
                    ) if given is None else webhooks.replay(
                        self.registry, rt, namespace, given, target.subresource, dry_run=dry_run or preview
                    ),
                    target.subresource or "",
                )  # fmt: skip
                return self._respond(request, rt, patched)
            case "delete":
                assert target.name is not None
                options = await _delete_options(request)
                await self.webhooks.admit_deletion(rt, namespace, target.name)
                deleted = self.registry.delete(rt, namespace, target.name, options, dry_run=dry_run)
                return self._respond(request, rt, deleted)
        return self._delete_collection(request, target, dry_run)

    def _respond(self, request: web.Request, rt: kinds.ResourceType, obj: Object, status: int = 200) -> web.Response:
        if tables.wants_table(request.headers.get("Accept", "")):
            table = tables.table(rt, [obj], str(obj["metadata"].get("resourceVersion", "")))
            return web.json_response(table, status=status)
        return _json_response(obj, status=status)

    # collections

    def _selected(self, request: web.Request, target: Target) -> list[Object]:
        labels = selectors.label_matcher(request.query.get("labelSelector"))
        fields = selectors.field_matcher(request.query.get("fieldSelector"))
        return [
            obj for obj in self.registry.list_objects(target.resource, target.namespace) if labels(obj) and fields(obj)
        ]

    def _list(self, request: web.Request, target: Target) -> web.Response:
        rt = target.resource
        items = self._selected(request, target)
        version = str(self.registry.store.resource_version)
        metadata: Object = {"resourceVersion": version}
        continue_token = request.query.get("continue")
        if continue_token:
            start = _decode_continue(continue_token)
            items = [obj for obj in items if _sort_key(obj) > start]
        limit = int(request.query.get("limit") or 0)
        if limit and len(items) > limit:
            metadata["remainingItemCount"] = len(items) - limit
            items = items[:limit]
            metadata["continue"] = _encode_continue(_sort_key(items[-1]))
        if tables.wants_table(request.headers.get("Accept", "")):
            return web.json_response(tables.table(rt, items, version, metadata.get("continue")))
        body = {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": metadata, "items": items}
        return _json_response(body)

    def _delete_collection(self, request: web.Request, target: Target, dry_run: bool) -> web.Response:
        rt = target.resource
        deleted = []
        for obj in self._selected(request, target):
            metadata = obj["metadata"]
            deleted.append(self.registry.delete(rt, metadata.get("namespace", ""), metadata["name"], dry_run=dry_run))
        version = str(self.registry.store.resource_version)
        body = {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": {"resourceVersion": version},
                "items": deleted}  # fmt: skip
        return web.json_response(body)

    # watch

    async def _watch(self, request: web.Request, target: Target) -> web.StreamResponse:
        rt = target.resource
        labels = selectors.label_matcher(request.query.get("labelSelector"))
        fields = selectors.field_matcher(request.query.get("fieldSelector"))
        namespace = target.namespace if rt.namespaced else None
        if target.name:
            by_name = target.name
            fields_then_name = fields

            def fields(obj: Object) -> bool:  # a watch on a single object is a name-selected watch
                return bool(obj["metadata"].get("name") == by_name and fields_then_name(obj))

        watcher = store.Watcher(rt.key, namespace, lambda obj: labels(obj) and fields(obj))
        since_text = request.query.get("resourceVersion")
        since = int(since_text) if since_text and since_text != "0" else None
        try:
            missed = self.registry.store.watch(watcher, since)
        except LookupError as error:
            return await _watch_error(request, errors.gone(str(error)))
        existing = self.registry.list_objects(rt, namespace) if since is None else []
        initial = [store.Event(0, rt.key, store.ADDED, obj) for obj in existing if watcher.matches(obj)]
        response = web.StreamResponse(headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
        await response.prepare(request)
        timeout = float(request.query.get("timeoutSeconds") or DEFAULT_WATCH_TIMEOUT_SECONDS)
        bookmarks = request.query.get("allowWatchBookmarks", "").lower() in ("1", "true")
        try:
            await self._stream(
                response, rt, watcher, timeout, bookmarks, backlog=initial + missed, cut=_WATCH_CUT.get()
            )
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.registry.store.unwatch(watcher)
        with contextlib.suppress(ConnectionResetError):
            await response.write_eof()
        return response

    async def _stream(
        self,
        response: web.StreamResponse,
        rt: kinds.ResourceType,
        watcher: store.Watcher,
        timeout: float,
        bookmarks: bool,
        *,
        backlog: list[store.Event],
        cut: faults.WatchCut | None,
    ) -> None:
        """The backlog (the initial and missed events), then events as they come, until the timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (cut.timeout(timeout) if cut else timeout)
        pending, sent = collections.deque(backlog), 0
        while pending or not self.stopping.is_set():
            if cut and cut.spent(sent):  # an injected fault: the stream ends early
                return
            if pending:
                event: store.Event | None = pending.popleft()
            else:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), min(remaining, BOOKMARK_INTERVAL_SECONDS))
                except TimeoutError:
                    if bookmarks:
                        await response.write(_bookmark_line(rt, self.registry.store.resource_version))
                    continue
            if event is None:
                return
            await response.write(_watch_line(rt, event.type, event.object))
            sent += 1

    # subresources that speak another kind: Scale and Binding

    async def _scale(self, request: web.Request, verb: str, target: Target) -> web.Response:
        """autoscaling/v1 Scale over spec.replicas, as `kubectl scale` and autoscalers use it."""
        assert target.name is not None
        rt, namespace = target.resource, target.namespace or ""
        current = self.registry.get(rt, namespace, target.name)
        if verb in ("update", "patch"):
            body = await _body(request)
            scale = _scale_of(current)
            if verb == "patch":
                changed = (
                    patch.json_patch(scale, body)
                    if request.content_type == patch.JSON
                    else patch.merge_patch(scale, body)
                )
            else:
                changed = body
            replicas = (changed.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                raise errors.ApiError(
                    422,
                    "Invalid",
                    f'Scale.autoscaling "{target.name}" is invalid: spec.replicas: '
                    "Invalid value: must be greater than or equal to 0",
                )
            wanted = changed.get("metadata", {}).get("resourceVersion")
            if wanted and wanted != current["metadata"]["resourceVersion"]:
                raise errors.conflict(rt.plural, rt.group, target.name, errors.STALE_OBJECT)
            updated = {**current, "spec": {**current.get("spec", {}), "replicas": replicas}}
            current = self.registry.update(rt, namespace, target.name, updated, manager=_field_manager(request))
        return web.json_response(_scale_of(current))

    async def _bind(self, request: web.Request, target: Target) -> web.Response:
        """POST pods/{name}/binding: what a scheduler calls to place a pod on a node."""
        assert target.name is not None
        binding = await _body(request)
        node = (binding.get("target") or {}).get("name")
        if not node:
            raise errors.bad_request("a Binding needs target.name, the node to bind to")
        self.registry.bind(target.resource, target.namespace or "", target.name, node, manager=_field_manager(request))
        return web.json_response(
            {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}, status=201
        )

    # logs

    async def _log(self, request: web.Request, target: Target) -> web.StreamResponse:
        assert target.name is not None
        self.registry.get(target.resource, target.namespace or "", target.name)
        tail = request.query.get("tailLines")
        text = self.log_reader(
            target.namespace or "",
            target.name,
            request.query.get("container"),
            int(tail) if tail else None,
            request.query.get("previous", "").lower() == "true",
        )
        if request.query.get("follow", "").lower() != "true" or self.log_follower is None:
            return web.Response(text=text, content_type="text/plain")
        response = web.StreamResponse(headers={"Content-Type": "text/plain", "Transfer-Encoding": "chunked"})
        await response.prepare(request)
        await response.write(text.encode())
        follower = self.log_follower(target.namespace or "", target.name, request.query.get("container"))
        with contextlib.suppress(ConnectionResetError):
            async for chunk in follower:
                if self.stopping.is_set():
                    break
                await response.write(chunk.encode())
            await response.write_eof()
        return response


def _fault_request(verb: str, target: Target) -> faults.Request:
    rt = target.resource
    return faults.Request(verb, rt.group, rt.plural, target.subresource, target.namespace, target.name)


async def _inject(injection: faults.Injection) -> None:
    """Slow the request, then fail it if the injection says so."""
    if injection.delay_seconds:
        await asyncio.sleep(injection.delay_seconds)
    error = injection.error()
    if error is not None:
        raise error


def _scale_of(obj: Object) -> Object:
    metadata = obj["metadata"]
    selector = (obj.get("spec") or {}).get("selector") or {}
    match_labels = selector.get("matchLabels") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            key: metadata[key]
            for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if key in metadata
        },
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": ",".join(f"{key}={value}" for key, value in sorted(match_labels.items())),
        },
    }


def _field_manager(request: web.Request) -> str:
    """The fieldManager asked for, or, as kube-apiserver does, the user agent's first word."""
    return request.query.get("fieldManager") or request.headers.get("User-Agent", "unknown").split("/")[0]


def _at(parts: list[str], index: int) -> str | None:
    return parts[index] if index < len(parts) else None


def _encoded(document: Object) -> bytes:
    """JSON by orjson (objects and lists are most of what the API server writes), or by the standard
    library for what orjson refuses: an integer beyond 64 bits."""
    try:
        return orjson.dumps(document)
    except TypeError:
        return json.dumps(document).encode()


def _json_response(document: Object, status: int = 200) -> web.Response:
    return web.Response(body=_encoded(document), status=status, content_type="application/json")


def _watch_line(rt: kinds.ResourceType, event_type: str, obj: Object) -> bytes:
    shown = obj if obj.get("apiVersion") == rt.api_version else {**obj, "apiVersion": rt.api_version}
    return _encoded({"type": event_type, "object": shown}) + b"\n"


async def _watch_error(request: web.Request, error: errors.ApiError) -> web.StreamResponse:
    """A watch that cannot start is answered, like kube-apiserver does, as one ERROR event."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    await response.prepare(request)
    await response.write((json.dumps({"type": "ERROR", "object": error.status()}) + "\n").encode())
    await response.write_eof()
    return response


def _bookmark_line(rt: kinds.ResourceType, version: int) -> bytes:
    bookmark = {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": {"resourceVersion": str(version)}}
    return (json.dumps({"type": "BOOKMARK", "object": bookmark}) + "\n").encode()


def _sort_key(obj: Object) -> tuple[str, str]:
    """The store's order: namespace, then name."""
    metadata = obj["metadata"]
    return (metadata.get("namespace", ""), metadata["name"])


def _encode_continue(key: tuple[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps({"after": list(key)}).encode()).decode()


def _decode_continue(token: str) -> tuple[str, str]:
    try:
        namespace, name = json.loads(base64.urlsafe_b64decode(token.encode()))["after"]
    except (ValueError, KeyError, TypeError) as error:
        raise errors.bad_request(f"continue key is not valid: {error}") from None
    return (str(namespace), str(name))


PROTOBUF = "application/vnd.kubernetes.protobuf"


async def _body(request: web.Request) -> Any:
    if request.content_type == PROTOBUF:
        return protobuf.decode(await request.read())
    text = await request.text()
    if not text:
        raise errors.bad_request("the request body is empty")
    try:
        if request.content_type in (patch.APPLY, "application/yaml"):
            return yaml.safe_load(text)
        return json.loads(text)
    except (ValueError, yaml.YAMLError) as error:
        raise errors.bad_request(f"the body of the request could not be decoded: {error}") from None


async def _delete_options(request: web.Request) -> Object:
    text = await request.text()
    options: Object = json.loads(text) if text else {}
    for key in ("propagationPolicy", "gracePeriodSeconds", "orphanDependents"):
        if key in request.query and key not in options:
            options[key] = request.query[key]
    return options


@contextlib.asynccontextmanager
async def serving(server: ApiServer, host: str, port: int) -> AsyncIterator[int]:
    """Serve on host:port (0 picks a free port); yields the port."""
    runner = web.AppRunner(server.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield int(bound)
    finally:
        server.close()
        await runner.cleanup()
