"""The one thin boundary to the Kubernetes API.

`client.Client` gets, lists, creates, merge-patches (spec and status) and posts Events for any
resource; `client.connect` builds one from a kubeconfig or a pod's service account, as any user
the caller may impersonate. Nothing here decides anything: the controllers' plans do.
"""
