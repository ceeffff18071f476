"""The interLink plugin contract as pydantic models (JSON keys exactly as interLink's Go code writes them).

Kubernetes objects keep unknown fields (``extra="allow"``): the plugin validates what it uses and passes the
rest through, so a newer interLink or Kubernetes does not break it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class K8s(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)


class ObjectMeta(K8s):
    name: str = ""
    namespace: str = "default"
    uid: str = ""
    deletionGracePeriodSeconds: int | None = None
    annotations: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)

    @field_validator("annotations", "labels", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return {} if v is None else v


class KeyToPath(K8s):
    key: str
    path: str
    mode: int | None = None


class ConfigMapVolumeSource(K8s):
    name: str = ""
    items: list[KeyToPath] | None = None
    defaultMode: int | None = None
    optional: bool | None = None


class SecretVolumeSource(K8s):
    secretName: str = ""
    items: list[KeyToPath] | None = None
    defaultMode: int | None = None
    optional: bool | None = None


class EmptyDirVolumeSource(K8s):
    medium: str | None = None
    sizeLimit: str | int | None = None


class HostPathVolumeSource(K8s):
    path: str
    type: str | None = None


class ProjectedVolumeSource(K8s):
    sources: list[dict[str, Any]] | None = None
    defaultMode: int | None = None


class Volume(K8s):
    name: str
    configMap: ConfigMapVolumeSource | None = None
    secret: SecretVolumeSource | None = None
    emptyDir: EmptyDirVolumeSource | None = None
    hostPath: HostPathVolumeSource | None = None
    projected: ProjectedVolumeSource | None = None


class VolumeMount(K8s):
    name: str
    mountPath: str
    readOnly: bool = False
    subPath: str | None = None


class EnvVar(K8s):
    name: str
    value: str | None = None


class ResourceRequirements(K8s):
    limits: dict[str, str | int | float] = Field(default_factory=dict)
    requests: dict[str, str | int | float] = Field(default_factory=dict)

    @field_validator("limits", "requests", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return {} if v is None else v


class ExecAction(K8s):
    command: list[str] = Field(min_length=1)


class HTTPHeader(K8s):
    name: str
    value: str = ""


class HTTPGetAction(K8s):
    port: int | str
    path: str = "/"
    host: str | None = None
    scheme: str = "HTTP"
    httpHeaders: list[HTTPHeader] | None = None


class TCPSocketAction(K8s):
    port: int | str
    host: str | None = None


class Handler(K8s):
    """What a probe or a lifecycle hook does: one of exec, httpGet, tcpSocket (grpc and sleep are refused)."""

    exec: ExecAction | None = None
    httpGet: HTTPGetAction | None = None
    tcpSocket: TCPSocketAction | None = None


class Probe(Handler):
    # Kubernetes' defaults and lower bounds.
    initialDelaySeconds: int = Field(default=0, ge=0)
    periodSeconds: int = Field(default=10, ge=1)
    timeoutSeconds: int = Field(default=1, ge=1)
    successThreshold: int = Field(default=1, ge=1)
    failureThreshold: int = Field(default=3, ge=1)


class Lifecycle(K8s):
    postStart: Handler | None = None
    preStop: Handler | None = None


class ContainerPort(K8s):
    containerPort: int
    name: str | None = None


class Container(K8s):
    name: str = Field(min_length=1)
    image: str = ""
    command: list[str] | None = None
    args: list[str] | None = None
    workingDir: str | None = None
    env: list[EnvVar] | None = None
    volumeMounts: list[VolumeMount] | None = None
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    ports: list[ContainerPort] | None = None
    startupProbe: Probe | None = None
    readinessProbe: Probe | None = None
    livenessProbe: Probe | None = None
    lifecycle: Lifecycle | None = None


class PodSecurityContext(K8s):
    runAsUser: int | None = None
    runAsGroup: int | None = None


class PodSpec(K8s):
    containers: list[Container] = Field(min_length=1)
    initContainers: list[Container] | None = None
    volumes: list[Volume] | None = None
    activeDeadlineSeconds: int | None = Field(default=None, ge=1)
    securityContext: PodSecurityContext | None = None
    restartPolicy: str = "Always"
    terminationGracePeriodSeconds: int | None = Field(default=None, ge=0)


class Pod(K8s):
    apiVersion: str = "v1"
    kind: str = "Pod"
    metadata: ObjectMeta
    spec: PodSpec | None = None
    status: dict[str, Any] | None = None


class ConfigMap(K8s):
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    data: dict[str, str] | None = None
    binaryData: dict[str, str] | None = None


class Secret(K8s):
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    data: dict[str, str] | None = None
    stringData: dict[str, str] | None = None
    type: str | None = None


class RetrievedContainer(K8s):
    name: str
    configMaps: list[ConfigMap] | None = None
    projectedvolumemaps: list[ConfigMap] | None = None
    secrets: list[Secret] | None = None
    emptyDirs: list[str] | None = None


class RetrievedPodData(K8s):
    pod: Pod
    container: list[RetrievedContainer] | None = None
    jobConfig: dict[str, Any] | None = None
    jobScript: str | None = None


class CreateStruct(BaseModel):
    PodUID: str
    PodJID: str


class ContainerStateWaiting(BaseModel):
    reason: str = ""
    message: str = ""


class ContainerStateRunning(BaseModel):
    startedAt: str | None = None


class ContainerStateTerminated(BaseModel):
    exitCode: int
    reason: str = ""
    message: str = ""
    startedAt: str | None = None
    finishedAt: str | None = None


class ContainerState(BaseModel):
    waiting: ContainerStateWaiting | None = None
    running: ContainerStateRunning | None = None
    terminated: ContainerStateTerminated | None = None


class ContainerStatus(BaseModel):
    name: str
    state: ContainerState
    lastState: ContainerState | None = None
    ready: bool = False
    started: bool | None = None
    restartCount: int = 0
    image: str = ""
    imageID: str = ""


class PodStatus(BaseModel):
    name: str
    UID: str
    namespace: str
    JID: str = ""
    containers: list[ContainerStatus] = Field(default_factory=list)
    initContainers: list[ContainerStatus] = Field(default_factory=list)


class LogOpts(K8s):
    Tail: int = Field(default=0, ge=0)
    Bytes: int = Field(default=0, ge=0, validation_alias="Bytes")
    SinceSeconds: int = Field(default=0, ge=0)
    SinceTime: datetime | None = None
    Timestamps: bool = False
    Follow: bool = False
    Previous: bool = False

    @field_validator("SinceTime", mode="before")
    @classmethod
    def _go_zero_time(cls, v: Any) -> Any:
        # Go marshals an unset time.Time as year 1; that means "no SinceTime".
        if v in (None, "") or (isinstance(v, str) and v.startswith("0001-01-01")):
            return None
        return v


class LogStruct(K8s):
    Namespace: str = ""
    PodUID: str = Field(min_length=1)
    PodName: str = ""
    ContainerName: str = Field(min_length=1)
    Opts: LogOpts = Field(default_factory=LogOpts)


class Accelerator(BaseModel):
    resourceType: str
    available: int


class PingResources(BaseModel):
    cpu: str
    memory: str
    pods: str
    accelerators: list[Accelerator] = Field(default_factory=list)


class Taint(BaseModel):
    key: str
    value: str = ""
    effect: str = "NoSchedule"


class PingResponse(BaseModel):
    status: str = "ok"
    resources: PingResources | None = None
    taints: list[Taint] = Field(default_factory=list)
