{{/* Names and labels shared by every object of the chart. */}}

{{- define "inlet.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "inlet.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* The objects of one task group: (dict "root" $ "group" NAME). */}}
{{- define "inlet.groupName" -}}
{{- printf "%s-%s" (include "inlet.fullname" .root) .group | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "inlet.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "inlet.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* Selects the pods of one group: (dict "root" $ "group" NAME). Never changes after install. */}}
{{- define "inlet.selectorLabels" -}}
app.kubernetes.io/name: {{ include "inlet.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .group }}
{{- end -}}

{{- define "inlet.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "inlet.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Refuses values that would run a task twice or that inlet would not read. */}}
{{- define "inlet.checks" -}}
{{- if lt (int .Values.replicas) 1 -}}
{{- fail (printf "replicas: %v: give at least 1. Every pod of a group follows every task file of the group, and each task runs in the one pod that holds its lease (README, Task ownership)." .Values.replicas) -}}
{{- end -}}
{{- if not (has .Values.workload (list "Deployment" "StatefulSet")) -}}
{{- fail (printf "workload: %q: write Deployment or StatefulSet" .Values.workload) -}}
{{- end -}}
{{- if not .Values.groups -}}
{{- fail "groups: empty: give at least one group with its task files, e.g. groups.main.tasks.shop\\.toml" -}}
{{- end -}}
{{- range $group, $spec := .Values.groups -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" $group) -}}
{{- fail (printf "groups.%s: a group name must be lowercase letters, digits and '-' (it names Kubernetes objects)" $group) -}}
{{- end -}}
{{- if not $spec.tasks -}}
{{- fail (printf "groups.%s.tasks: empty: give the group's task files (file name -> TOML text)" $group) -}}
{{- end -}}
{{- range $file, $text := $spec.tasks -}}
{{- if not (hasSuffix ".toml" $file) -}}
{{- fail (printf "groups.%s.tasks.%s: the file name must end in .toml (inlet run -c DIR reads only *.toml)" $group $file) -}}
{{- end -}}
{{- if not (regexMatch "^[-._a-zA-Z0-9]+$" $file) -}}
{{- fail (printf "groups.%s.tasks.%s: a ConfigMap key is letters, digits, '-', '_' and '.'" $group $file) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
