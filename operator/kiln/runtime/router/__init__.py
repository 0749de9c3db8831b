"""kiln-router: the data plane of the `router` traffic provider, one per ModelDeployment.

A small HTTP proxy that sends each request to one variant (stable, candidate, preview: names are
data) by weight or by the `x-kiln-variant` header, mirrors a share of requests if told to, and
reloads its configuration without a restart or a dropped request.

- `config`: the JSON configuration, parsed and validated; pure.
- `metrics`: the Prometheus series rollout analysis reads per variant.
- `mirroring`: copies to the mirror variant beside the live request, bounded.
- `comparison`: whether a shadow's inference answer agrees with the live one; pure.
- `shadow`: the running comparison behind `mirror.compare`, its counts and latency p99s.
- `sources`: the configuration from a polled file or a watched ConfigMap.
- `app`: the proxy and the router's own endpoints; `main`: the command, start-up and shutdown.

Like every runtime it imports only `kiln.api` and `kiln.artifacts` of Kiln (here, neither). It
creates no Kubernetes objects: the operator makes its Deployment, Service and ConfigMap.
"""
