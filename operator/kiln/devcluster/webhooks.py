"""Admission webhooks: AdmissionReview v1 sent to the webhooks of Mutating- and
ValidatingWebhookConfigurations, as kube-apiserver sends it.

A webhook is reached at its clientConfig `url` (https with the caBundle, or
plain http, which the dev cluster allows for loopback development servers such
as kopf's `WebhookServer(insecure=True)`) or its `service` (the Service's
ClusterIP and port, which the dev cluster's proxy serves on loopback; TLS is
checked against `<service>.<namespace>.svc`). Mutating webhooks run one after
the other and their JSONPatches are applied; validating ones run together. A
denial answers with the webhook's status (`admission webhook "name" denied the
request: ...`); a webhook that cannot be called, times out or answers nonsense
fails the request under failurePolicy Fail and is skipped under Ignore. The
webhooks' `warnings` go back to the client as Warning headers.

A webhook call cannot happen inside the registry's synchronous write, so the
dispatcher previews the write as a dry run (to get the object the webhooks see,
defaulted and named), calls the webhooks, and then writes the mutated object.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import ssl
import uuid
from collections.abc import Callable
from typing import Any

import aiohttp

from kiln.devcluster import admission, admission_plugins, errors, kinds, patch, registry

log = logging.getLogger(__name__)

Object = dict[str, Any]
Write = Callable[[Object | None, bool], Object]
"""(the object to write instead of the request's own, or None; whether only to preview) -> the result."""

MUTATING = "mutatingwebhookconfigurations.admissionregistration.k8s.io"
VALIDATING = "validatingwebhookconfigurations.admissionregistration.k8s.io"
DEFAULT_TIMEOUT_SECONDS = 10


class CallError(Exception):
    """The webhook could not be called, or did not answer an AdmissionReview."""


def denial(webhook: str, status: Object | None) -> errors.ApiError:
    """kube-apiserver's ToStatusErr: the webhook's status, with a code of at least 400."""
    status = status or {}
    code = int(status.get("code") or 400)
    denied_by = f'admission webhook "{webhook}" denied the request'
    if status.get("message"):
        message = f"{denied_by}: {status['message']}"
    elif status.get("reason"):
        message = f"{denied_by}: {status['reason']}"
    else:
        message = f"{denied_by} without explanation"
    return errors.ApiError(max(code, 400), str(status.get("reason") or ""), message, status.get("details"))


def failed_call(webhook: str, why: str) -> errors.ApiError:
    return errors.ApiError(500, "InternalError", f'Internal error occurred: failed calling webhook "{webhook}": {why}')


def review_response(review: Any, uid: str) -> Object:
    """The response of an AdmissionReview answer, checked as kube-apiserver checks it."""
    if not isinstance(review, dict) or review.get("kind") != "AdmissionReview":
        raise CallError("received invalid webhook response: expected an AdmissionReview")
    response = review.get("response")
    if not isinstance(response, dict):
        raise CallError("webhook response was absent")
    if response.get("uid") != uid:
        raise CallError(f"expected response.uid={uid!r}, got {response.get('uid')!r}")
    return response


def patched(obj: Object, response: Object) -> Object:
    """The object with a mutating webhook's JSONPatch applied."""
    if not response.get("patch"):
        return obj
    if response.get("patchType", "JSONPatch") != "JSONPatch":
        raise CallError(f"unsupported patch type {response.get('patchType')!r}")
    try:
        operations = json.loads(base64.b64decode(response["patch"]))
    except (ValueError, binascii.Error) as error:
        raise CallError(f"the webhook's patch could not be decoded: {error}") from None
    try:
        return patch.json_patch(obj, operations)
    except errors.ApiError as error:
        raise CallError(f"JSON Patch: {error.message}") from None


class Dispatcher:
    """Calls the webhooks a write matches, around the registry's own admission."""

    def __init__(self, cluster: registry.Registry) -> None:
        self.registry = cluster

    def _configured(self, key: str, request: admission.Request) -> list[Object]:
        """The webhooks whose rules match, in the order of their configurations' names."""
        return [
            webhook
            for configuration in self.registry.store.list(key)
            for webhook in configuration.get("webhooks") or []
            if any(admission.rule_matches(rule, request) for rule in webhook.get("rules") or [])
        ]

    async def admit(self, rt: kinds.ResourceType, namespace: str, name: str | None, write: Write,
                    subresource: str = "") -> Object:  # fmt: skip
        """Write through the webhooks (a plain write when none applies)."""
        old = self.registry.store.get(rt.key, namespace if rt.namespaced else "", name) if name else None
        operation = admission.UPDATE if old is not None else admission.CREATE
        probe = {"metadata": {"namespace": namespace, "name": name or ""}}
        request = admission_plugins.admission_request(
            self.registry, rt, probe, old, operation=operation, subresource=subresource
        )
        mutating, validating = self._configured(MUTATING, request), self._configured(VALIDATING, request)
        if not mutating and not validating:
            return write(None, False)
        candidate: Object | None = None
        if mutating:
            with admission_plugins.phase(admission_plugins.MUTATING_PREVIEW):
                candidate = write(None, True)
            for webhook in mutating:
                request = admission_plugins.admission_request(
                    self.registry, rt, candidate, old, operation=operation, subresource=subresource
                )
                response = await self._call(webhook, request, candidate, old)
                if response is not None:
                    try:
                        candidate = patched(candidate, response)
                    except CallError as error:
                        raise failed_call(webhook["name"], str(error)) from None
        if not validating:
            return write(candidate, False)
        with admission_plugins.phase(admission_plugins.VALIDATING_PREVIEW):
            candidate = write(candidate, True)
        request = admission_plugins.admission_request(
            self.registry, rt, candidate, old, operation=operation, subresource=subresource
        )
        answers = await asyncio.gather(
            *(self._call(webhook, request, candidate, old) for webhook in validating), return_exceptions=True
        )
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer
        with admission_plugins.phase(admission_plugins.AFTER_WEBHOOKS):
            return write(candidate, False)

    async def admit_deletion(self, rt: kinds.ResourceType, namespace: str, name: str) -> None:
        """Validating policies, then validating webhooks, for a DELETE of an object that exists (one that
        does not gets its 404 from the delete itself); raises a denial."""
        old = self.registry.store.get(rt.key, namespace if rt.namespaced else "", name)
        if old is None:
            return
        admission_plugins.validate_deletion(self.registry, rt, old)
        request = admission_plugins.admission_request(self.registry, rt, None, old, operation=admission.DELETE)
        validating = self._configured(VALIDATING, request)
        answers = await asyncio.gather(
            *(self._call(webhook, request, None, old) for webhook in validating), return_exceptions=True
        )
        for answer in answers:
            if isinstance(answer, BaseException):
                raise answer

    async def _call(self, webhook: Object, request: admission.Request, obj: Object | None,
                    old: Object | None) -> Object | None:  # fmt: skip
        """The webhook's response if it applies and allows the request; raises its denial."""
        if not admission.webhook_matches(webhook, request, obj, old):
            return None
        name = webhook.get("name", "")
        fail_closed = webhook.get("failurePolicy", admission.FAIL) == admission.FAIL
        try:
            if not admission.conditions_hold(webhook.get("matchConditions"), admission.variables(request, obj, old)):
                return None
        except admission.EvaluationError as error:
            if fail_closed:
                raise failed_call(name, str(error)) from None
            return None
        uid = str(uuid.uuid4())
        review = request.review(obj, old)
        review["request"]["uid"] = uid
        try:
            response = review_response(await self._post(webhook, review), uid)
        except CallError as error:
            if fail_closed:
                raise failed_call(name, str(error)) from None
            log.warning("webhook %s failed and is ignored: %s", name, error)
            return None
        context = admission_plugins.current()
        if context is not None:
            context.warnings += [str(w) for w in response.get("warnings") or []]
        if not response.get("allowed"):
            raise denial(name, response.get("status"))
        return response

    def _endpoint(self, config: Object) -> tuple[str, str | None]:
        """(URL, the TLS server name when it is not the URL's host)."""
        if config.get("url"):
            return str(config["url"]), None
        service = config.get("service") or {}
        found = self.registry.store.get("services", service.get("namespace", ""), service.get("name", ""))
        if found is None:
            raise CallError(f'service "{service.get("namespace")}/{service.get("name")}" not found')
        address = (found.get("spec") or {}).get("clusterIP")
        path = service.get("path") or "/"
        return f"https://{address}:{service.get('port', 443)}{path}", f"{service['name']}.{service['namespace']}.svc"

    async def _post(self, webhook: Object, review: Object) -> Any:
        config = webhook.get("clientConfig") or {}
        url, server_name = self._endpoint(config)
        timeout = int(webhook.get("timeoutSeconds") or DEFAULT_TIMEOUT_SECONDS)
        url = f"{url}{'&' if '?' in url else '?'}timeout={timeout}s"
        tls: ssl.SSLContext | bool = _tls(config.get("caBundle")) if url.startswith("https:") else False
        try:
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
                session.post(url, json=review, ssl=tls, server_hostname=server_name) as answer,
            ):
                if answer.status != 200:
                    text = (await answer.text())[:200]
                    raise CallError(f'failed to call webhook: the server responded with {answer.status}: "{text}"')
                return await answer.json(content_type=None)
        except TimeoutError:
            raise CallError(f'failed to call webhook: Post "{url}": context deadline exceeded') from None
        except aiohttp.ClientConnectorError as error:
            why = "connect: connection refused" if isinstance(error.os_error, ConnectionRefusedError) else error
            raise CallError(
                f'failed to call webhook: Post "{url}": dial tcp {error.host}:{error.port}: {why}'
            ) from None
        except (aiohttp.ClientError, ValueError) as error:
            raise CallError(f'failed to call webhook: Post "{url}": {error}') from None


def _tls(ca_bundle: str | None) -> ssl.SSLContext:
    if not ca_bundle:
        return ssl.create_default_context()
    try:
        pem = base64.b64decode(ca_bundle).decode()
        return ssl.create_default_context(cadata=pem)
    except (ValueError, ssl.SSLError) as error:
        raise CallError(f"could not use the caBundle: {error}") from None


def replay(cluster: registry.Registry, rt: kinds.ResourceType, namespace: str, obj: Object,
           subresource: str | None, *, dry_run: bool) -> Object:  # fmt: skip
    """Write an object a patch previewed (and webhooks may have changed): an update, or the create
    of an apply patch to an object that does not exist yet."""
    name = obj["metadata"]["name"]
    if cluster.store.get(rt.key, namespace if rt.namespaced else "", name) is None:
        return cluster.create(rt, namespace, obj, dry_run=dry_run)
    return cluster.update(rt, namespace, name, obj, subresource=subresource, dry_run=dry_run)
