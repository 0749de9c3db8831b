"""kiln-server: serves ModelVersions over the Open Inference Protocol v2, with Prometheus metrics.

- `settings`: what the server is told (ModelVersions from files or env, flags, fault injection).
- `loading`: from a ModelVersion to an estimator, safely (format opt-in, digest, trusted types).
- `repository`: the declared models, their states, and which one a request addresses.
- `protocol`: decoding requests and encoding responses; pure, every client error a 4xx.
- `metrics`: the Prometheus series rollout analysis and drift detection read.
- `app`: the HTTP endpoints; `main`: the command, start-up and graceful shutdown.

Like every runtime it imports only `kiln.api` and `kiln.artifacts` of Kiln.
"""
