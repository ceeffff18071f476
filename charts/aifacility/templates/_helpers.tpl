{{- /* Names and labels of the aifacility umbrella chart's own objects. */}}

{{- define "aifacility.labels" -}}
app.kubernetes.io/name: aifacility
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- /*
  The hub's ServiceAccount, named as the jupyterhub subchart names it: hub.serviceAccount.name when set, else
  "<fullname>-hub", where z2jh's fullname is fullnameOverride when it is a string ("" gives plain "hub") and the
  release-derived name otherwise.
*/}}
{{- define "aifacility.hubServiceAccount" -}}
{{- $jh := .Values.jupyterhub | default dict -}}
{{- $hub := $jh.hub | default dict -}}
{{- $sa := $hub.serviceAccount | default dict -}}
{{- if $sa.name -}}
{{- $sa.name -}}
{{- else -}}
{{- $fo := $jh.fullnameOverride -}}
{{- if kindIs "string" $fo -}}
{{- if $fo }}{{ $fo }}-hub{{ else }}hub{{ end -}}
{{- else -}}
{{- $name := $jh.nameOverride | default "jupyterhub" -}}
{{- if contains $name .Release.Name }}{{ .Release.Name }}-hub{{ else }}{{ .Release.Name }}-{{ $name }}-hub{{ end -}}
{{- end -}}
{{- end -}}
{{- end }}

{{- /* The namespace of the notebook pods and jobs: the facility file's, which defaults to "aifacility". */}}
{{- define "aifacility.facilityNamespace" -}}
{{- .Values.facility.namespace | default "aifacility" -}}
{{- end }}

{{- /* The ConfigMap holding facility.yaml; fixed because the jupyterhub subchart's hub.extraVolumes names it. */}}
{{- define "aifacility.facilityConfigMap" -}}
aifacility-facility
{{- end }}
