"""The embedded Kubernetes for development, demos and tests.

An API server that real clients (kubectl, the `kubernetes` package, kopf)
accept, with the semantics they rely on. It is a development tool, never a
production target, and it imports nothing of the operator.
"""
