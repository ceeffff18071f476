"""aifacility: a multi-tenant analysis facility for physicists."""

import os
import sys

# JupyterHub gives a managed service ten one-second tries to answer, then stops the whole hub. Two optional
# imports inside libraries we use cost seconds on a busy 2-core machine (ten were measured during a test run)
# and give a service nothing: kubernetes(-asyncio)'s dynamic client imports kubernetes-validate where it is
# installed (a test tool here), and jsonschema builds rfc3987-syntax's IRI grammar where that is installed. A
# managed service (JupyterHub names it in JUPYTERHUB_SERVICE_NAME) goes without them: the libraries treat them
# as absent. Everything else imports as usual.
if os.environ.get("JUPYTERHUB_SERVICE_NAME"):
    for _optional in ("kubernetes_validate", "rfc3987_syntax"):
        sys.modules.setdefault(_optional, None)  # type: ignore[arg-type]
