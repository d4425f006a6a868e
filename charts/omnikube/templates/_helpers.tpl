{{/* Names and labels shared by every template. */}}

{{- define "omnikube.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's full name: the release name alone when it already says "omnikube". */}}
{{- define "omnikube.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "omnikube.operatorName" -}}
{{- printf "%s-operator" (include "omnikube.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "omnikube.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "omnikube.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "omnikube.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "omnikube.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: omnikube
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "omnikube.operatorSelectorLabels" -}}
app.kubernetes.io/name: {{ include "omnikube.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "omnikube.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
