{{/* Names, labels and the addresses the parts of the chart find each other by. */}}

{{- define "otel-mlmon.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "otel-mlmon.fullname" -}}
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

{{/* Resource names: trimmed so that the longest suffix still fits 63 characters. */}}
{{- define "otel-mlmon.processor" -}}
{{- printf "%s-processor" (include "otel-mlmon.fullname" . | trunc 43 | trimSuffix "-") }}
{{- end }}
{{- define "otel-mlmon.collector" -}}
{{- printf "%s-collector" (include "otel-mlmon.fullname" . | trunc 43 | trimSuffix "-") }}
{{- end }}
{{- define "otel-mlmon.collectorKafka" -}}
{{- printf "%s-collector-kafka" (include "otel-mlmon.fullname" . | trunc 43 | trimSuffix "-") }}
{{- end }}

{{- define "otel-mlmon.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "otel-mlmon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: otel-mlmon
{{- end }}

{{/* Selector labels of one component: (dict "context" $ "component" "processor"). */}}
{{- define "otel-mlmon.selectorLabels" -}}
app.kubernetes.io/name: {{ include "otel-mlmon.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The Secret holding the processor's bearer token, and its key. */}}
{{- define "otel-mlmon.tokenSecret" -}}
{{- default (printf "%s-token" (include "otel-mlmon.fullname" . | trunc 57 | trimSuffix "-")) .Values.auth.existingSecret }}
{{- end }}
{{- define "otel-mlmon.tokenKey" -}}
{{- if .Values.auth.existingSecret }}{{ .Values.auth.existingSecretKey }}{{ else }}token{{ end }}
{{- end }}

{{/* The processor's gRPC address as the Collector dials it: the Service's cluster name (what a TLS certificate
     must name). */}}
{{- define "otel-mlmon.processorHost" -}}
{{- printf "%s.%s.svc" (include "otel-mlmon.processor" .) .Release.Namespace }}
{{- end }}
{{- define "otel-mlmon.processorEndpoint" -}}
{{- printf "%s:%d" (include "otel-mlmon.processorHost" .) (int .Values.processor.ports.grpc) }}
{{- end }}

{{- define "otel-mlmon.processorImage" -}}
{{- printf "%s:%s" .Values.processor.image.repository (default .Chart.AppVersion .Values.processor.image.tag) }}
{{- end }}
