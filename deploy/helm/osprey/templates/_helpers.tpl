{{- define "osprey.name" -}}{{ .Release.Name }}-osprey{{- end -}}

{{- define "osprey.labels" -}}
app.kubernetes.io/name: osprey
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "osprey.selector" -}}
app.kubernetes.io/name: osprey
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "osprey.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "osprey.cudaImage" -}}
{{ .Values.image.repository }}:{{ .Values.image.cudaTag | default (printf "%s-cuda" (.Values.image.tag | default .Chart.AppVersion)) }}
{{- end -}}

{{/* The config Secret mounted at /etc/osprey, and the environment every role shares. */}}
{{- define "osprey.configVolume" -}}
- name: config
  secret:
    secretName: {{ .Values.config.existingSecret }}
    items:
      - key: {{ .Values.config.key }}
        path: osprey.toml
{{- end -}}

{{- define "osprey.configMount" -}}
- name: config
  mountPath: /etc/osprey
  readOnly: true
{{- end -}}

{{- define "osprey.env" -}}
- name: OSPREY_CONFIG_FILE
  value: /etc/osprey/osprey.toml
{{- with .Values.env }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* A worker Deployment; `gpu` says which flavour. */}}
{{- define "osprey.worker" -}}
{{- $root := .root -}}
{{- $w := .values -}}
{{- $component := printf "worker-%s" .flavour -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "osprey.name" $root }}-{{ $component }}
  labels:
    {{- include "osprey.labels" $root | nindent 4 }}
    app.kubernetes.io/component: {{ $component }}
spec:
  replicas: {{ $w.replicas | default 1 }}
  selector:
    matchLabels:
      {{- include "osprey.selector" (dict "root" $root "component" $component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "osprey.selector" (dict "root" $root "component" $component) | nindent 8 }}
      {{- if $root.Values.prometheus.scrape }}
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: {{ $root.Values.worker.metricsPort | quote }}
        prometheus.io/path: /metrics
      {{- end }}
    spec:
      {{- if .gpu }}
      runtimeClassName: {{ $w.runtimeClassName | default "nvidia" }}
      {{- with $w.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $w.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- end }}
      terminationGracePeriodSeconds: 120
      containers:
        - name: worker
          image: {{ if $w.image }}{{ $w.image }}{{ else if .gpu }}{{ include "osprey.cudaImage" $root }}{{ else }}{{ include "osprey.image" $root }}{{ end }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: {{ if .group }}["worker", "--group", {{ .group | quote }}]{{ else }}["worker"]{{ end }}
          env:
            {{- include "osprey.env" $root | nindent 12 }}
            - name: OSPREY_METRICS_LISTEN
              value: "0.0.0.0:{{ $root.Values.worker.metricsPort }}"
            - name: OSPREY_DETECT__DEVICE
              value: {{ if .gpu }}cuda{{ else }}cpu{{ end }}
            - name: OSPREY_WORKER__CONCURRENCY
              value: {{ $w.concurrency | default 2 | quote }}
            {{- with $w.maxBatch }}
            - name: OSPREY_DETECT__MAX_BATCH
              value: {{ . | quote }}
            {{- end }}
          ports:
            - name: metrics
              containerPort: {{ $root.Values.worker.metricsPort }}
          livenessProbe:
            httpGet: {path: /healthz, port: metrics}
            periodSeconds: 10
          readinessProbe:
            httpGet: {path: /healthz, port: metrics}
            periodSeconds: 5
          resources:
            {{- $resources := deepCopy $w.resources }}
            {{- if .gpu }}
            {{- $_ := set $resources.limits "nvidia.com/gpu" ($w.gpusPerPod | default 1) }}
            {{- end }}
            {{- toYaml $resources | nindent 12 }}
          volumeMounts:
            {{- include "osprey.configMount" $root | nindent 12 }}
            {{- if $w.modelVolume }}
            - name: model
              mountPath: /models/{{ .group }}
              readOnly: true
            {{- end }}
      volumes:
        {{- include "osprey.configVolume" $root | nindent 8 }}
        {{- with $w.modelVolume }}
        - name: model
          {{- toYaml . | nindent 10 }}
        {{- end }}
{{- end -}}
