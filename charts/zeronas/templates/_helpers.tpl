{{/* The release's base name for every object. */}}
{{- define "zeronas.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object of the chart. */}}
{{- define "zeronas.labels" -}}
app.kubernetes.io/name: zeronas-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The operator pod selector. */}}
{{- define "zeronas.selector" -}}
app.kubernetes.io/name: zeronas-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "zeronas.serviceAccountName" -}}
{{- default (include "zeronas.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}
