"""The one thin boundary to the Kubernetes API.

`client.Api` is the protocol the controllers are written against: get, list, create, merge-patch
(spec and status), delete, logs, Events and whoami for any resource. `client.Client` implements it
over HTTP and `client.connect` builds one from a kubeconfig or a pod's service account, as any user
the caller may impersonate; `fake.FakeApi` implements it in memory for unit tests. `patches`
computes merge patches. Nothing here decides anything: the controllers' plans do.
"""
