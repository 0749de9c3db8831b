"""ValidatingAdmissionPolicies evaluated as kube-apiserver evaluates them.

A binding applies its policy to the requests both match; the policy's
matchConditions gate it, its `variables` are computed in order, and every
validation's CEL expression must be true. A false one fails with its `message`,
its `messageExpression`'s result or `failed expression: <expr>`; an evaluation
error fails only under failurePolicy Fail. Each failure is enforced by the
binding's validationActions: Deny refuses the request with the first failure
(`ValidatingAdmissionPolicy 'p' with binding 'b' denied request: ...`), Warn
returns a warning, Audit records an audit annotation. Parameters come from the
binding's paramRef (by name, or every object a selector selects), and a
missing one is refused or allowed by parameterNotFoundAction.

Pure functions over dicts; no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kiln.devcluster import admission

Object = dict[str, Any]

DENY, WARN, AUDIT = "Deny", "Warn", "Audit"
INVALID = "Invalid"
AUDIT_KEY = "validation.policy.admission.k8s.io/validation_failure"
NO_PARAMS = "no params found for policy binding with `Deny` parameterNotFoundAction"


@dataclass(frozen=True)
class Failure:
    """One validation that did not pass, with what the binding does about it."""

    policy: str
    binding: str
    actions: tuple[str, ...]
    message: str
    reason: str = INVALID
    index: int = 0

    @property
    def denial(self) -> str:
        return f"ValidatingAdmissionPolicy '{self.policy}' with binding '{self.binding}' denied request: {self.message}"

    @property
    def warning(self) -> str:
        where = f"ValidatingAdmissionPolicy '{self.policy}' with binding '{self.binding}'"
        return f"Validation failed for {where}: {self.message}"

    def audit(self) -> Object:
        return {
            "message": self.message,
            "policy": self.policy,
            "binding": self.binding,
            "expressionIndex": self.index,
            "validationActions": list(self.actions),
        }


@dataclass(frozen=True)
class Verdict:
    """What all policies say about one request."""

    denied: Failure | None
    warnings: tuple[str, ...]
    audit_annotations: dict[str, str]


def _name(obj: Object) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


def binding_matches(policy: Object, binding: Object, request: admission.Request, obj: Object | None,
                    old: Object | None) -> bool:  # fmt: skip
    """The policy's matchConstraints and the binding's matchResources both select the request."""
    spec = binding.get("spec") or {}
    if spec.get("policyName") != _name(policy):
        return False
    constraints = (policy.get("spec") or {}).get("matchConstraints") or {}
    if not constraints.get("resourceRules"):
        return False  # a policy without resourceRules matches nothing
    if not admission.resources_match(constraints, request, obj, old):
        return False
    return admission.resources_match(spec.get("matchResources"), request, obj, old)


def param_ref(binding: Object) -> Object | None:
    ref: Object | None = (binding.get("spec") or {}).get("paramRef")
    return ref


def params_missing_denied(binding: Object) -> bool:
    return bool((param_ref(binding) or {}).get("parameterNotFoundAction", DENY) == DENY)


def _actions(binding: Object) -> tuple[str, ...]:
    return tuple((binding.get("spec") or {}).get("validationActions") or [DENY])


def _computed(policy_spec: Object, context: Object) -> Object:
    """`variables`, each able to use the ones before it; one that fails is left out, so an
    expression using it fails in turn."""
    computed: Object = {}
    context["variables"] = computed
    for variable in policy_spec.get("variables") or []:
        try:
            computed[variable["name"]] = admission.evaluate(variable["expression"], context)
        except admission.EvaluationError:
            continue
    return computed


def _message(validation: Object, context: Object) -> str:
    expression = validation.get("messageExpression")
    if expression:
        try:
            text = admission.evaluate(expression, context)
        except admission.EvaluationError:
            text = None
        if isinstance(text, str) and text.strip() and "\n" not in text:
            return text
    return str(validation.get("message") or f"failed expression: {validation['expression'].strip()}")


def evaluate(
    policy: Object,
    binding: Object,
    request: admission.Request,
    obj: Object | None,
    old: Object | None,
    *,
    params: Object | None = None,
) -> list[Failure]:
    """The failures of one policy through one binding against one parameter object."""
    spec = policy.get("spec") or {}
    fail_closed = spec.get("failurePolicy", admission.FAIL) == admission.FAIL
    actions = _actions(binding)

    def failure(message: str, reason: str = INVALID, index: int = 0) -> Failure:
        return Failure(_name(policy), _name(binding), actions, message, reason, index)

    context = admission.variables(request, obj, old, params)
    try:
        if not admission.conditions_hold(spec.get("matchConditions"), context):
            return []
    except admission.EvaluationError as error:
        return [failure(str(error))] if fail_closed else []
    _computed(spec, context)
    failures = []
    for index, validation in enumerate(spec.get("validations") or []):
        try:
            holds = admission.evaluate(validation["expression"], context)
        except admission.EvaluationError as error:
            if fail_closed:
                failures.append(failure(str(error), index=index))
            continue
        if holds is not True:
            failures.append(failure(_message(validation, context), validation.get("reason") or INVALID, index))
    return failures


def missing_params(policy: Object, binding: Object) -> list[Failure]:
    """A binding whose parameters are not found: refused unless parameterNotFoundAction is Allow."""
    if not params_missing_denied(binding):
        return []
    return [Failure(_name(policy), _name(binding), _actions(binding), NO_PARAMS)]


def verdict(failures: list[Failure]) -> Verdict:
    denied = next((f for f in failures if DENY in f.actions), None)
    warnings = tuple(f.warning for f in failures if WARN in f.actions)
    audited = [f.audit() for f in failures if AUDIT in f.actions]
    annotations = {AUDIT_KEY: json.dumps(audited, separators=(",", ":"))} if audited else {}
    return Verdict(denied, warnings, annotations)
