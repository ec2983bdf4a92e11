{{- define "ebpf-tracer.name" -}}
{{- .Chart.Name -}}
{{- end -}}

{{- define "ebpf-tracer.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object: the plain manifests' one, plus Helm's own. */}}
{{- define "ebpf-tracer.labels" -}}
app.kubernetes.io/name: {{ include "ebpf-tracer.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "ebpf-tracer.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ebpf-tracer.name" . }}
{{- end -}}

{{/* The agent's YAML config (ebpf-tracer run --config). */}}
{{- define "ebpf-tracer.config" -}}
exporter: otlp
metrics:
  port: {{ .Values.metrics.port }}
  address: 0.0.0.0
selection:
{{- toYaml (.Values.selection | default dict) | nindent 2 }}
kubernetes:
{{- toYaml .Values.kubernetes | nindent 2 }}
{{- end -}}
