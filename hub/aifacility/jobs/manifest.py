"""The batch/v1 Job (and its token Secret) for an accepted job plan: what the jobs service creates.

The Job is created suspended with its group's Kueue queue label; Kueue admits it under the group's quota, picks
the flavor (and with it the node labels and tolerations) and resumes it. The pod runs as the notebook user
(jovyan, 1000:100, no capabilities) with the same home, group directories and datasets as the user's sessions,
and carries the labels the accounting reads (user, group, kind).
"""

from __future__ import annotations

import json
import secrets
import shlex
import string
from collections.abc import Mapping
from typing import Any

from kubespawner.slugs import safe_slug

from aifacility.auth.jobs import job_token_secret
from aifacility.facility.model import Facility
from aifacility.facility.queues import INTERLINK_TAINT, SITE_LABEL
from aifacility.jobs.policy import JobPlan
from aifacility.spawner.queueing import QUEUE_LABEL
from aifacility.spawner.storage import pod_volumes

MANAGED_BY = {"app.kubernetes.io/managed-by": "aifacility-jobs"}
USER_LABEL = "aifacility.io/user"
GROUP_LABEL = "aifacility.io/group"
KIND_LABEL = "aifacility.io/kind"
# The exact user name (labels hold only a slug of it): ownership is checked against this annotation.
OWNER_ANNOTATION = "aifacility.io/owner"
COMMAND_ANNOTATION = "aifacility.io/command"
OUTPUT_ANNOTATION = "aifacility.io/output-notebook"
# What the job was submitted with (the validated request, never its token), so that it can be submitted again.
REQUEST_ANNOTATION = "aifacility.io/request"
MAX_EXEC_LABEL = "kueue.x-k8s.io/max-exec-time-seconds"
PRIORITY_LABEL = "kueue.x-k8s.io/priority-class"
CONTAINER = "job"
_SUFFIX = string.ascii_lowercase + string.digits


def user_label(user: str) -> str:
    return safe_slug(user, max_length=40)


def new_job_name(user: str) -> str:
    """`<user slug>-<6 random>`: unique in the shared namespace and telling whose it is at a glance."""
    return f"{user_label(user)}-{''.join(secrets.choice(_SUFFIX) for _ in range(6))}"


def home_claim(user: str) -> str:
    """The user's home claim, as KubeSpawner names it (`pvc_name_template = home-{username}`)."""
    return f"home-{safe_slug(user)}"


def papermill_command(plan: JobPlan, parameters: dict[str, Any], home: str) -> list[str]:
    """papermill runs the notebook headless in its own directory and writes the executed copy beside it."""
    assert plan.notebook and plan.output_notebook
    cmd = ["papermill", "--log-output", "--cwd", f"{home}/{plan.notebook}".rsplit("/", 1)[0],
           f"{home}/{plan.notebook}", f"{home}/{plan.output_notebook}"]
    for name, value in parameters.items():
        # -y takes YAML, so numbers, booleans and null keep their type and strings stay strings.
        cmd += ["-y", _yaml_param(name, value)]
    return cmd


def _yaml_param(name: str, value: Any) -> str:
    import json

    return f"{name}: {json.dumps(value)}"  # JSON is YAML: every value round-trips exactly


def job_manifest(facility: Facility, plan: JobPlan, name: str, groups: list[str],
                 parameters: dict[str, Any] | None = None, token: str | None = None,
                 request: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """{"job": <batch/v1 Job>, "secret": <v1 Secret> | None}; the Secret's ownerReference is set once the Job
    exists (its uid is needed). `request`: the submitted request as JSON, kept on the Job for a resubmission."""
    ns = facility.namespace
    home = facility.storage.home_mount_path.rstrip("/")
    labels = {**MANAGED_BY, USER_LABEL: user_label(plan.user), GROUP_LABEL: plan.group, KIND_LABEL: plan.kind}
    command = list(plan.command) if plan.kind == "job" else papermill_command(plan, parameters or {}, home)
    env: list[dict[str, Any]] = [{"name": "AIFACILITY_JOB_NAME", "value": name},
                                 {"name": "AIFACILITY_GROUP", "value": plan.group}]
    if plan.offload:
        # A remote site has none of the facility's shared filesystem: the job runs in the site's own scratch
        # directory and reaches data with the token it carries (WLCG storage), as interLink's users do.
        volumes: list[dict[str, Any]] = []
        mounts: list[dict[str, Any]] = []
    else:
        volumes, mounts = pod_volumes(facility, home_claim(plan.user), groups)
        env.insert(0, {"name": "HOME", "value": home})
    secret = None
    if token:
        parts = job_token_secret(name, ns, token)
        secret = parts["secret"]
        volumes.append(parts["volume"])
        mounts.append(parts["volume_mount"])
        env += parts["env"]
    resources: dict[str, str] = {"cpu": plan.cpu, "memory": plan.memory}
    if plan.accelerator is not None:
        resources[plan.accelerator.resource] = str(plan.accelerator_count)
    container: dict[str, Any] = {}
    if not plan.offload:
        container["workingDir"] = home
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "enableServiceLinks": False,
        # Jobs never talk to the Kubernetes API: no service-account token in the pod.
        "automountServiceAccountToken": False,
        "securityContext": {"runAsUser": 1000, "runAsGroup": 100, "fsGroup": 100, "runAsNonRoot": True,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": CONTAINER,
            "image": next(i.image for i in facility.images if i.name == plan.image),
            "command": command,
            "env": env,
            "resources": {"requests": dict(resources), "limits": dict(resources)},
            "volumeMounts": mounts,
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            **container,
        }],
        "volumes": volumes,
    }
    if plan.offload:
        # Opting in to the offload target: its taint is tolerated, and the site selector makes Kueue skip the
        # local flavor (see SITE_LABEL); Kueue adds the virtual node's hostname on admission.
        pod_spec["tolerations"] = [{"key": INTERLINK_TAINT, "operator": "Exists", "effect": "NoSchedule"}]
        pod_spec["nodeSelector"] = {SITE_LABEL: plan.offload}
    annotations = {OWNER_ANNOTATION: plan.user, COMMAND_ANNOTATION: shlex.join(command)[:4096]}
    if plan.output_notebook:
        annotations[OUTPUT_ANNOTATION] = plan.output_notebook
    if request is not None:
        annotations[REQUEST_ANNOTATION] = json.dumps(request, separators=(",", ":"), sort_keys=True)
    job = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "namespace": ns,
                     "labels": {**labels, QUEUE_LABEL: plan.group, MAX_EXEC_LABEL: str(plan.seconds),
                                PRIORITY_LABEL: "batch"},
                     "annotations": annotations},
        "spec": {
            # Kueue's webhook would suspend it as well; created suspended, nothing runs before admission.
            "suspend": True,
            "backoffLimit": 0,
            # Kueue's cap counts admitted time; the Job's own deadline is the backstop where Kueue is absent.
            "activeDeadlineSeconds": plan.seconds,
            "ttlSecondsAfterFinished": int(facility.jobs.keep_finished_hours * 3600),
            "template": {"metadata": {"labels": labels, "annotations": {OWNER_ANNOTATION: plan.user}},
                         "spec": pod_spec},
        },
    }
    return {"job": job, "secret": secret}
