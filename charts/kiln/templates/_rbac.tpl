{{/*
The rules the operator needs in every namespace it watches, derived from kiln.kube.client's resources and
what the controllers and kopf do with them (tests/chart checks every resource of kiln.kube.client.KNOWN
and every Kiln kind is here). Besides the Kiln kinds, kopf watches pods (built-in gang admission keeps
what every pod requests in memory, and a worker's exit wakes its TrainingJob), ResourceQuotas (admission
honours them for a whole gang) and Kiln's serving Deployments (a rollout's replicas becoming ready wake
its ModelDeployment); the controllers read their other children by get and list.
tests/integration/test_operator_rbac.py runs the operator with exactly these rules and checks every
request it makes against them, and every rule against its requests.

RBAC refuses to let the operator create a Role granting what it does not hold itself (unless it has
`escalate`, which it deliberately does not): the kiln-trainer Role grants modelversions create/get/list and
trainingjobs get, and the kiln-router Role grants configmaps get/list/watch, so the operator holds those.
*/}}
{{- define "kiln.namespacedRules" -}}
# The Kiln kinds: kopf watches them and patches its finalizer and progress annotations (not on
# TrainingJobs, which it only watches); a finished TrainingJob with a TTL is deleted; retraining
# triggers create TrainingJobs; trained ModelVersions are created (and granted to kiln-trainer).
- apiGroups: ["kiln.dev"]
  resources: ["trainingjobs"]
  verbs: ["get", "list", "watch", "delete", "create"]
- apiGroups: ["kiln.dev"]
  resources: ["modelversions"]
  verbs: ["get", "list", "watch", "patch", "create"]
- apiGroups: ["kiln.dev"]
  resources: ["modeldeployments"]
  verbs: ["get", "list", "watch", "patch"]
- apiGroups: ["kiln.dev"]
  resources: ["trainingjobs/status", "modelversions/status", "modeldeployments/status"]
  verbs: ["patch"]
# Training workers: created, listed, watched, restarted as a gang; their last log lines explain a failure.
# kiln-router lists its Deployment's pods for their readiness. A preempted job's workers are annotated
# kiln.dev/preempted before they are deleted. get and patch: each job's workers get a Role that may read
# and patch their own pods (progress, preemption), which RBAC lets only a holder of both grant.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods/log"]
  verbs: ["get"]
# Built-in gang admission keeps each namespace's quotas in memory.
- apiGroups: [""]
  resources: ["resourcequotas"]
  verbs: ["list", "watch"]
# Rendezvous and serving Services, checkpoint and dataset claims.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create", "patch", "delete"]
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["get", "create", "delete"]
# kiln-router's weights; list and watch are held only because the kiln-router Role grants them.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The kiln-trainer and kiln-router identities: a ServiceAccount, a Role and a RoleBinding each; and each
# TrainingJob's workers' own, deleted with the job when its time to live is over.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "create", "patch", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["create", "patch", "delete"]
# The stable, canary, blue, green and shadow Deployments, watched for their rollouts' progress; the
# replicas traffic provider reads each one's readiness by name.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# spec.autoscaling: a HorizontalPodAutoscaler per serving version, listed to delete the ones no longer wanted.
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list", "create", "patch", "delete"]
# Gang scheduling through coscheduling or Volcano.
- apiGroups: ["scheduling.x-k8s.io", "scheduling.volcano.sh"]
  resources: ["podgroups"]
  verbs: ["create", "patch", "delete"]
# Traffic split and mirroring through the Gateway API.
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["get", "create", "patch"]
# Events that `kubectl describe` shows: Kiln's own and kopf's (both only ever create them).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{/* What is cluster-scoped, in either mode: GPU placement and gang admission keep node capacity and
priorities in memory, from a list and a watch; kopf discovers the CRDs it serves. */}}
{{- define "kiln.clusterRules" -}}
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["list", "watch"]
- apiGroups: ["scheduling.k8s.io"]
  resources: ["priorityclasses"]
  verbs: ["list", "watch"]
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["list", "watch"]
# `kiln whoami`-style identity checks (kiln.kube.client.SELF_SUBJECT_REVIEWS); every authenticated user
# holds this through system:basic-user too.
- apiGroups: ["authentication.k8s.io"]
  resources: ["selfsubjectreviews"]
  verbs: ["create"]
{{- end -}}
