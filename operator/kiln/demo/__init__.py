"""`make demo`: the whole ML lifecycle on a dev cluster, live, in a few minutes.

`python -m kiln.demo` starts a dev cluster (CPU and simulated GPU nodes) with a real Prometheus
and `kiln run`, then walks the lifecycle with real processes: train iris 1.0.0 and serve it, ship
1.1.0 by canary under Prometheus analysis, roll a fault-injected 1.2.0 back, then shift the traffic
until drift retrains and the retrained version ships. `python -m kiln.demo down` stops a demo kept
running with `--keep`.
"""
