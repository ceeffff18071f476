"""Kueue's API group and version as the facility speaks them, and the label by which a Workload names its job."""

KUEUE_GROUP, KUEUE_VERSION = "kueue.x-k8s.io", "v1beta2"
JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"  # on a Workload: the uid of the job (or pod) it admits
