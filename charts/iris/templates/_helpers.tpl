{{/*
The chart's name, or nameOverride.
*/}}
{{- define "iris.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's base name for every object: the release name if it already contains the
chart's name (so `helm install iris` gives a Service named iris), else release-chart.
*/}}
{{- define "iris.fullname" -}}
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

{{/*
The labels every object carries.
*/}}
{{- define "iris.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "iris.selectorLabels" . }}
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: {{ include "iris.name" . }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The labels that identify this release's objects.
*/}}
{{- define "iris.selectorLabels" -}}
app.kubernetes.io/name: {{ include "iris.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of one component's objects: (dict "context" $ "component" "predictor").
The component keeps the predictor, training and minio selectors from overlapping.
*/}}
{{- define "iris.componentLabels" -}}
{{ include "iris.labels" .context }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Selector labels of one component's pods: (dict "context" $ "component" "predictor").
*/}}
{{- define "iris.componentSelectorLabels" -}}
{{ include "iris.selectorLabels" .context }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/*
Names of the objects, each in one place.
*/}}
{{- define "iris.minioName" -}}
{{- printf "%s-minio" (include "iris.fullname" . | trunc 57 | trimSuffix "-") }}
{{- end }}

{{- define "iris.modelsClaimName" -}}
{{- if .Values.storage.pvc.existingClaim }}
{{- .Values.storage.pvc.existingClaim }}
{{- else }}
{{- printf "%s-models" (include "iris.fullname" . | trunc 56 | trimSuffix "-") }}
{{- end }}
{{- end }}

{{/*
A workload's ServiceAccount: (dict "context" $ "component" "predictor" "account"
.Values.predictor.serviceAccount); <fullname>-<component> when created.
*/}}
{{- define "iris.serviceAccountName" -}}
{{- $account := .account }}
{{- if $account.create }}
{{- $base := include "iris.fullname" .context | trunc (int (sub 62 (len .component))) | trimSuffix "-" }}
{{- default (printf "%s-%s" $base .component) $account.name }}
{{- else }}
{{- default "default" $account.name }}
{{- end }}
{{- end }}

{{/*
"true" when every node can read the models at once: a bucket, or a ReadWriteMany
volume. A ReadWriteOnce volume attaches to one node at a time.
*/}}
{{- define "iris.sharedStorage" -}}
{{- or (eq .Values.storage.type "s3") (has "ReadWriteMany" .Values.storage.pvc.accessModes) }}
{{- end }}

{{/*
A switch that is true, false, or null for "only where every node can read the models"
(predictor.topologySpread, podDisruptionBudget): (dict "context" $ "enabled" <value>).
*/}}
{{- define "iris.enabledWhereShared" -}}
{{- if kindIs "invalid" .enabled }}
{{- include "iris.sharedStorage" .context }}
{{- else }}
{{- .enabled }}
{{- end }}
{{- end }}

{{/*
A pod's affinity: (dict "context" $ "affinity" <the workload's affinity value>). On a
volume only
one node can attach, the Job and the predictors require each other's node, so the
scheduler puts them all where the volume is instead of where it can never attach.
The first of them may go anywhere: a pod that matches its own required term is let
through when no pod matches yet (the Kubernetes inter-pod affinity rule).
*/}}
{{- define "iris.affinity" -}}
{{- $affinity := deepCopy .affinity }}
{{- if ne (include "iris.sharedStorage" .context) "true" }}
{{- $term := dict "topologyKey" "kubernetes.io/hostname" }}
{{- $selector := include "iris.selectorLabels" .context | fromYaml }}
{{- $components := dict "key" "app.kubernetes.io/component" "operator" "In" "values" (list "predictor" "training") }}
{{- $_ := set $term "labelSelector" (dict "matchLabels" $selector "matchExpressions" (list $components)) }}
{{- $podAffinity := get $affinity "podAffinity" | default dict }}
{{- $required := get $podAffinity "requiredDuringSchedulingIgnoredDuringExecution" | default list }}
{{- $_ = set $podAffinity "requiredDuringSchedulingIgnoredDuringExecution" (append $required $term) }}
{{- $_ = set $affinity "podAffinity" $podAffinity }}
{{- end }}
{{- with $affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The image both programs run: one image, two entry points.
*/}}
{{- define "iris.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}
{{- end }}

{{/*
The model name the predictor serves and every URL and metric carries.
*/}}
{{- define "iris.modelName" -}}
iris
{{- end }}

{{/*
Where the models volume is mounted in the training Job and the predictors.
*/}}
{{- define "iris.modelsMountPath" -}}
/models
{{- end }}

{{/*
The S3 endpoint: the bundled MinIO's Service, or the external one from values.
*/}}
{{- define "iris.s3Endpoint" -}}
{{- if .Values.minio.enabled }}
{{- printf "http://%s.%s.svc:%d" (include "iris.minioName" .) .Release.Namespace (int .Values.minio.service.port) }}
{{- else }}
{{- .Values.storage.s3.endpoint }}
{{- end }}
{{- end }}

{{/*
The Secret the training Job (and by default the predictors) read the S3 keys from:
storage.s3.existingSecret, else <fullname>-s3, which the bundled MinIO's keys Job
makes. Empty when the pods take no keys at all: an external endpoint without
existingSecret uses the AWS credential chain (workload identity).
*/}}
{{- define "iris.s3SecretName" -}}
{{- if .Values.storage.s3.existingSecret }}
{{- .Values.storage.s3.existingSecret }}
{{- else if .Values.minio.enabled }}
{{- printf "%s-s3" (include "iris.fullname" . | trunc 60 | trimSuffix "-") }}
{{- end }}
{{- end }}

{{/*
A setting's value as an environment variable: whole numbers without an exponent
(Helm reads 1048576 from YAML as a float, which would print as 1.048576e+06).
*/}}
{{- define "iris.envValue" -}}
{{- if and (kindIs "float64" .) (eq . (float64 (int64 .))) }}
{{- int64 . }}
{{- else }}
{{- . }}
{{- end }}
{{- end }}

{{/*
One IRIS_* variable per key of a settings map: nEstimators becomes IRIS_N_ESTIMATORS.
*/}}
{{- define "iris.settingsEnv" -}}
{{- range $key, $value := . }}
- name: IRIS_{{ $key | snakecase | upper }}
  value: {{ include "iris.envValue" $value | quote }}
{{- end }}
{{- end }}

{{/*
Where the models are (one location the Job publishes to and the predictors read), for the training Job and the predictors alike: the URI, and for
S3 the endpoint and the keys, which come from a Secret and never from values. Called
with (dict "context" $ "secret" <name>); an empty secret renders no keys, so the
programs take the AWS credential chain (the ServiceAccount's IAM role).
*/}}
{{- define "iris.storeEnv" -}}
{{- $ := .context }}
- name: IRIS_MODEL_URI
  {{- if eq $.Values.storage.type "s3" }}
  value: {{ printf "s3://%s/%s" $.Values.storage.s3.bucket ($.Values.storage.s3.prefix | trimAll "/") | trimSuffix "/" | quote }}
  {{- else }}
  value: {{ include "iris.modelsMountPath" $ | quote }}
  {{- end }}
{{- if eq $.Values.storage.type "s3" }}
- name: IRIS_S3_ENDPOINT
  value: {{ include "iris.s3Endpoint" $ | quote }}
- name: IRIS_S3_REGION
  value: {{ $.Values.storage.s3.region | quote }}
- name: IRIS_S3_TIMEOUT_SECONDS
  value: {{ include "iris.envValue" $.Values.storage.s3.timeoutSeconds | quote }}
{{- with .secret }}
- name: IRIS_S3_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.storage.s3.accessKeyIdKey }}
- name: IRIS_S3_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.storage.s3.secretAccessKeyKey }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Checkov findings this chart answers by design, each with its reason, for a workload's
metadata.annotations. Image findings apply to the project's own image only.
*/}}
{{- define "iris.checkovSkips" -}}
checkov.io/skip1: "CKV_K8S_40=UID 1000 is the image's user and owns the files it writes; PSS restricted asks only for non-root"
{{- if .minio }}
checkov.io/skip3: "CKV_K8S_15=an image pinned by digest never changes, so IfNotPresent saves a pull per start"
{{- else }}
checkov.io/skip2: "CKV_K8S_43=the image is built from this repository and loaded into the cluster; pin it with image.digest"
checkov.io/skip3: "CKV_K8S_15=IfNotPresent lets an image loaded with kind load run; Always would try to pull it"
{{- end }}
{{- if .secretEnv }}
checkov.io/skip4: "CKV_K8S_35=the programs read their S3 keys from environment variables by design; the keys come from a Secret"
{{- end }}
{{- end }}
