{{/*
The training Job is named from a hash of its own spec (the image, the training
settings, everything that shapes the model): an upgrade that changes none of them
keeps the finished Job and does not retrain, one that does runs a new Job rather than
editing an immutable one, and `helm template` (Argo CD) names it the same every time.
*/}}
{{- define "iris.trainingJobName" -}}
{{- $hash := include "iris.trainingJobSpec" . | sha256sum | trunc 10 }}
{{- printf "%s-train-%s" (include "iris.fullname" . | trunc 46 | trimSuffix "-") $hash }}
{{- end }}

{{/*
The spec of a training Job, for the install/upgrade Job and the CronJob alike.
*/}}
{{- define "iris.trainingJobSpec" -}}
backoffLimit: {{ .Values.training.backoffLimit }}
activeDeadlineSeconds: {{ .Values.training.activeDeadlineSeconds }}
{{- if not (kindIs "invalid" .Values.training.ttlSecondsAfterFinished) }}
ttlSecondsAfterFinished: {{ .Values.training.ttlSecondsAfterFinished }}
{{- end }}
podFailurePolicy:
  rules:
    # An eviction or a node drain is not the program failing: run again, uncounted.
    - action: Ignore
      onPodConditions:
        - type: DisruptionTarget
          status: "True"
    # 2 bad setting, 3 below the minimum accuracy, 4 worse than the current model:
    # training is deterministic, so a retry would refuse again. Fail the Job at once;
    # its status names the exit code. 1 and 5 (store unreachable) are retried.
    - action: FailJob
      onExitCodes:
        containerName: train
        operator: In
        values: [2, 3, 4]
template:
  metadata:
    labels:
      {{- include "iris.componentLabels" (dict "context" . "component" "training") | nindent 6 }}
      {{- with .Values.training.podLabels }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- with .Values.training.podAnnotations }}
    annotations:
      {{- toYaml . | nindent 6 }}
    {{- end }}
  spec:
    restartPolicy: Never
    serviceAccountName: {{ include "iris.serviceAccountName" (dict "context" . "component" "training" "account" .Values.training.serviceAccount) }}
    automountServiceAccountToken: false
    enableServiceLinks: false
    {{- with .Values.training.priorityClassName }}
    priorityClassName: {{ . | quote }}
    {{- end }}
    {{- with .Values.imagePullSecrets }}
    imagePullSecrets:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    securityContext:
      {{- toYaml .Values.podSecurityContext | nindent 6 }}
    containers:
      - name: train
        image: {{ include "iris.image" . }}
        imagePullPolicy: {{ .Values.image.pullPolicy }}
        command: ["python", "-m", "training"]
        env:
          {{- include "iris.storeEnv" (dict "context" . "secret" (include "iris.s3SecretName" .)) | trim | nindent 10 }}
          {{- $settings := .Values.training.settings }}
          {{- if eq (int $settings.maxDepth) 0 }}
          {{- $settings = set (deepCopy $settings) "maxDepth" "null" }}
          {{- end }}
          {{- include "iris.settingsEnv" $settings | trim | nindent 10 }}
          {{- with .Values.training.mlflow }}
          {{- if .trackingUri }}
          - name: IRIS_MLFLOW_TRACKING_URI
            value: {{ .trackingUri | quote }}
          - name: IRIS_MLFLOW_EXPERIMENT
            value: {{ .experiment | quote }}
          - name: IRIS_MLFLOW_MODEL_NAME
            value: {{ .modelName | quote }}
          {{- $secret := .existingSecret }}
          {{- range list "MLFLOW_TRACKING_USERNAME" "MLFLOW_TRACKING_PASSWORD" "MLFLOW_TRACKING_TOKEN" }}
          {{- if $secret }}
          - name: {{ . }}
            valueFrom:
              secretKeyRef:
                name: {{ $secret | quote }}
                key: {{ . }}
                optional: true
          {{- end }}
          {{- end }}
          {{- end }}
          {{- end }}
          {{- with .Values.training.extraEnv }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
        {{- with .Values.training.extraEnvFrom }}
        envFrom:
          {{- toYaml . | nindent 10 }}
        {{- end }}
        securityContext:
          {{- toYaml .Values.containerSecurityContext | nindent 10 }}
        resources:
          {{- toYaml .Values.training.resources | nindent 10 }}
        volumeMounts:
          - name: tmp
            mountPath: /tmp
          {{- if eq .Values.storage.type "pvc" }}
          - name: models
            mountPath: {{ include "iris.modelsMountPath" . }}
          {{- end }}
          {{- with .Values.training.extraVolumeMounts }}
          {{- toYaml . | nindent 10 }}
          {{- end }}
    volumes:
      - name: tmp
        emptyDir:
          sizeLimit: {{ .Values.tmpSizeLimit }}
      {{- if eq .Values.storage.type "pvc" }}
      - name: models
        persistentVolumeClaim:
          claimName: {{ include "iris.modelsClaimName" . }}
      {{- end }}
      {{- with .Values.training.extraVolumes }}
      {{- toYaml . | nindent 6 }}
      {{- end }}
    {{- with .Values.training.nodeSelector }}
    nodeSelector:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- with .Values.training.tolerations }}
    tolerations:
      {{- toYaml . | nindent 6 }}
    {{- end }}
    {{- include "iris.affinity" (dict "context" . "affinity" .Values.training.affinity) | nindent 4 }}
{{- end }}
