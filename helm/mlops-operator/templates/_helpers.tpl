{{- define "mlops-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mlops-operator.serviceAccountName" -}}
{{- default (include "mlops-operator.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "mlops-operator.labels" -}}
app.kubernetes.io/name: mlops-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "mlops-operator.selector" -}}
app.kubernetes.io/name: mlops-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "mlops-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{/* auto, true or false: whether to render an optional monitoring.coreos.com/v1 object. */}}
{{- define "mlops-operator.monitoring" -}}
{{- $enabled := toString (index . 0) -}}
{{- $context := index . 1 -}}
{{- $kind := index . 2 -}}
{{- if or (eq $enabled "true") (and (eq $enabled "auto") ($context.Capabilities.APIVersions.Has (printf "monitoring.coreos.com/v1/%s" $kind))) -}}
true
{{- end -}}
{{- end -}}

{{/* What the operator does in each namespace it watches. */}}
{{- define "mlops-operator.namespacedRules" -}}
- apiGroups: [mlops.dev]
  resources: [modelversions, modeldeployments, driftmonitors]
  verbs: [get, list, watch, patch, update]
- apiGroups: [mlops.dev]
  resources: [modelversions/status, modeldeployments/status, driftmonitors/status]
  verbs: [get, patch, update]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# The canary router: its routing table (a ConfigMap; DriftMonitor retraining reports
# are ConfigMaps too), its own identity, and the right to read its table and the
# EndpointSlices, which the operator must hold itself to grant.
- apiGroups: [""]
  resources: [configmaps, serviceaccounts]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
# Traffic mode gatewayAPI: the weighted HTTPRoute.
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, list, watch, create, update, patch, delete]
# spec.networkPolicy: the ModelDeployment's NetworkPolicy.
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, update, patch, delete]
# DriftMonitor retraining: a Job, created once.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [list, create]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}
