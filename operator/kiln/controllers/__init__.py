"""Controller shells: observe through `kiln.kube`, plan with a domain package, act, record status.

One module per kind. They hold the only I/O of a reconcile and no decisions; `kiln.handlers`
wires them to kopf, and nothing here imports kopf.
"""
