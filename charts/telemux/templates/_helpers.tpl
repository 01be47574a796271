{{/* Chart name, truncated to the 63 characters of a label value. */}}
{{- define "telemux.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Fully qualified app name: the release name, prefixed to the chart name unless it already
contains it. Truncated to 63 characters (DNS label limit of some name fields).
*/}}
{{- define "telemux.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "telemux.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object of the release. */}}
{{- define "telemux.labels" -}}
helm.sh/chart: {{ include "telemux.chart" . }}
{{ include "telemux.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: telemux
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels (immutable in a Deployment: keep them to name and instance). */}}
{{- define "telemux.selectorLabels" -}}
app.kubernetes.io/name: {{ include "telemux.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "telemux.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "telemux.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The operator image reference. */}}
{{- define "telemux.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
The collector distribution version the operator renders for and validates with: what
e2e/collector/install-collector.sh stamps (OTELCOL_VERSION without the v, then -telemux), the
tag of DEFAULT_COLLECTOR_IMAGE (tests/chart.rs checks they agree).
*/}}
{{- define "telemux.collectorDistVersion" -}}
0.161.0-telemux
{{- end }}

{{/* The default image of the collector pods (`--collector-image`). */}}
{{- define "telemux.collectorImage" -}}
{{- printf "%s:%s" .Values.collector.image.repository (default (include "telemux.collectorDistVersion" .) .Values.collector.image.tag) }}
{{- end }}
