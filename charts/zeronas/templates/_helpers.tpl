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

{{/* An image reference from {repository, tag, digest}: repository:tag, and @digest when set
     (the tag defaults to the chart's appVersion). */}}
{{- define "zeronas.image" -}}
{{- $ref := printf "%s:%s" .image.repository (default .chart.AppVersion .image.tag) -}}
{{- if .image.digest -}}
{{- $ref = printf "%s@%s" $ref .image.digest -}}
{{- end -}}
{{- $ref -}}
{{- end -}}

{{/* Labels of a CSI component (`controller` or `node`): the chart's, under its own name. */}}
{{- define "zeronas.csiLabels" -}}
app.kubernetes.io/name: zeronas-csi-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- define "zeronas.csiSelector" -}}
app.kubernetes.io/name: zeronas-csi-{{ .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}
