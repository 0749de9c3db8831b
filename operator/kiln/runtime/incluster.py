"""The pod's own identity towards the API server, for whatever runs inside a Kiln pod.

`KUBECONFIG` when it is set (the dev cluster's kubelet gives every pod one, holding the pod's
service account token), else the in-cluster service account: the token and CA under
/var/run/secrets/kubernetes.io/serviceaccount and KUBERNETES_SERVICE_HOST/PORT.
"""

from __future__ import annotations

import os

from kubernetes import client, config


def api_client() -> client.ApiClient:
    configuration = client.Configuration()
    if os.environ.get("KUBECONFIG"):
        config.load_kube_config(client_configuration=configuration)
    else:
        config.load_incluster_config(client_configuration=configuration)
    return client.ApiClient(configuration)
