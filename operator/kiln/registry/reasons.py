"""Condition types and the reasons conditions and Events give, named once so both use the same words."""

from __future__ import annotations

from typing import Final

# Condition types.
READY: Final = "Ready"
VALIDATED: Final = "Validated"
ARTIFACT_VERIFIED: Final = "ArtifactVerified"
APPROVED: Final = "Approved"
STAGE_GRANTED: Final = "StageGranted"

# Validation.
VALIDATING: Final = "Validating"
GATES_PASSED: Final = "GatesPassed"
GATES_FAILED: Final = "GatesFailed"
GATE_PASSED: Final = "GatePassed"
GATE_FAILED: Final = "GateFailed"
DUPLICATE_VERSION: Final = "DuplicateVersion"

# The artifact.
DIGEST_MATCHES: Final = "DigestMatches"
DIGEST_MISMATCH: Final = "DigestMismatch"
ARTIFACT_NOT_FOUND: Final = "ArtifactNotFound"
UNSAFE_ARTIFACT_URI: Final = "UnsafeArtifactURI"
ARTIFACT_UNREACHABLE: Final = "ArtifactUnreachable"
NOT_CHECKED: Final = "NotChecked"

# Approvals.
APPROVALS_MET: Final = "ApprovalsMet"
APPROVALS_PENDING: Final = "ApprovalsPending"
NEW_APPROVAL: Final = "Approved"

# Stages.
STAGE_CURRENT: Final = "StageCurrent"
STAGE_CHANGED: Final = "StageChanged"
AWAITING_VALIDATION: Final = "AwaitingValidation"
AWAITING_APPROVALS: Final = "AwaitingApprovals"
INVALID_STAGE_TRANSITION: Final = "InvalidStageTransition"
VERSION_REJECTED: Final = "VersionRejected"
SUPERSEDED: Final = "Superseded"
