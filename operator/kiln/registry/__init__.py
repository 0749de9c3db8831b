"""ModelVersion.

Semantic versions, quality gates, stages, approvals and lineage, as pure functions. No I/O, no
kopf, no clients.
"""
