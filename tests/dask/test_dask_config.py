"""dask-gateway's configuration from the facility file, and what the hub's configuration gains from it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from dask_gateway_server.app import DaskGateway
from dask_gateway_server.backends.db_base import DataManager
from dask_gateway_server.models import User
from traitlets.config import Config

from aifacility.dask.backend import FacilityBackend, FacilityClusterConfig
from aifacility.dask.config import PREFIX, SERVICE, configure, gateway_config
from aifacility.facility import load_facility

FAC = load_facility()


def gateway(**kw: str) -> DaskGateway:
    c = Config()
    gateway_config(c, FAC, listen="127.0.0.1:18123", **kw)
    c.DaskGateway.config_file = os.devnull
    app = DaskGateway(config=c)
    app.initialize([])  # builds the authenticator and the backend as `dask-gateway-server` would; starts nothing
    return app


async def test_the_gateway_builds_our_backend_with_the_facility_options() -> None:
    app = gateway(db_url="sqlite:////tmp/never-opened.sqlite")
    backend = app.backend
    assert isinstance(backend, FacilityBackend) and backend.facility == FAC
    assert type(app.authenticator).__name__ == "JupyterHubAuthenticator"
    assert app.authenticator.jupyterhub_service_name == SERVICE
    assert backend.worker_start_timeout == FAC.dask.worker_start_timeout_minutes * 60
    assert backend.stop_clusters_on_shutdown is False  # clusters outlive a restart of the gateway
    backend.db = DataManager()  # what setup() would open (the clusters counted per user)
    _, config = await backend.process_cluster_options(User("bob", ["physics"]), {"accelerator": "t4"})
    assert isinstance(config, FacilityClusterConfig)
    assert (config.group, config.worker_cores, config.cluster_max_workers) == ("physics", 2, 20)
    assert config.accelerator_resource == "nvidia.com/gpu" and config.idle_timeout == 30 * 60
    assert config.image == FAC.images[0].image and config.worker_cmd == ["dask", "worker"]
    spec = (await backend.get_cluster_options(User("bob", ["physics"]))).get_specification()
    assert {f["field"]: f["default"] for f in spec} == {"group": "physics", "worker_cores": 0, "worker_memory": 0,
                                                        "accelerator": "none"}


def test_the_hub_runs_the_gateway_and_tells_sessions_where_it_is(tmp_path: Path) -> None:
    c = Config()
    c.JupyterHub.load_roles = [{"name": "user", "scopes": ["self", "custom:jobs:write!user"]}]
    configure(c, FAC, data_dir=tmp_path, url="http://127.0.0.1:18124")
    (service,) = c.JupyterHub.services
    assert service["name"] == SERVICE and service["url"] == "http://127.0.0.1:18124"
    assert service["command"][1:] == ["-m", "aifacility.dask"]
    env = service["environment"]
    assert env["AIFACILITY_DASK_DB"].endswith("dask-gateway.sqlite") and env["DASK_GATEWAY_ENCRYPT_KEYS"]
    key = tmp_path / "dask-gateway.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    roles = {r["name"]: r["scopes"] for r in c.JupyterHub.load_roles}
    assert roles["user"] == ["self", "custom:jobs:write!user", f"access:services!service={SERVICE}"]
    assert "read:users:groups!user" in roles["server"]  # the options handler needs the session token's groups
    session = c.Spawner.environment
    assert session["DASK_GATEWAY__ADDRESS"] == f"http://127.0.0.1:18124{PREFIX}"
    assert session["DASK_GATEWAY__PROXY_ADDRESS"] == "gateway://127.0.0.1:18124"
    assert session["DASK_GATEWAY__AUTH__TYPE"] == "jupyterhub"
    configure(Config(), FAC, data_dir=tmp_path, url="http://127.0.0.1:18124")
    assert key.read_text() == env["DASK_GATEWAY_ENCRYPT_KEYS"]  # the database key is made once


async def test_new_clusters_follow_the_admin_service_s_policies_and_budgets(tmp_path: Path) -> None:
    """Read at each request: a quota an admin takes away and a budget used up apply to the next cluster without a
    restart of the gateway, as they do to spawns and jobs."""
    import time

    import pytest

    from aifacility.dask.options import DaskRefused
    from aifacility.quotas.budgets import BudgetBook, BudgetState
    from aifacility.quotas.policy import GroupPolicy
    from aifacility.quotas.store import PolicyStore

    url = f"sqlite:///{tmp_path / 'policies.sqlite'}"
    app = gateway(policy_db=url)
    backend = app.backend
    backend.db = DataManager()
    alice = User("alice", ["ml"])
    _, config = await backend.process_cluster_options(alice, {"accelerator": "rtx5000"})
    assert config.accelerator_resource.startswith("nvidia.com/")
    offered = (await backend.get_cluster_options(alice)).get_specification()
    assert "rtx5000" in next(f for f in offered if f["field"] == "accelerator")["spec"]["options"]

    store = PolicyStore(url)
    store.put("group", "ml", GroupPolicy(queue_accelerators={"rtx5000": 0}), actor="dana")
    with pytest.raises(Exception, match="'rtx5000' is not a valid option"):
        await backend.process_cluster_options(alice, {"accelerator": "rtx5000"})
    spec = (await backend.get_cluster_options(alice)).get_specification()
    assert "rtx5000" not in next(f for f in spec if f["field"] == "accelerator")["spec"]["options"]
    store.put("group", "ml", None, actor="dana")  # removed: the file's quota again
    await backend.process_cluster_options(alice, {"accelerator": "rtx5000"})

    now = time.time()
    book = BudgetBook(store.engine)
    book.save(BudgetState("group", "ml", now, "exhausted", now, 100.0, "40 of 40 GPU-hours this month",
                          "cpu-only", {}, now))
    with pytest.raises(Exception, match="Dask clusters with GPU or MIG workers are closed"):
        await backend.process_cluster_options(alice, {"accelerator": "rtx5000"})
    _, cpu = await backend.process_cluster_options(alice, {})  # CPU workers still start under cpu-only
    assert cpu.accelerator_resource == ""
    book.save(BudgetState("group", "ml", now, "exhausted", now, 100.0, "40 of 40 GPU-hours this month",
                          "hold", {}, now))
    with pytest.raises(Exception, match="new Dask clusters are closed") as refused:
        await backend.process_cluster_options(alice, {})
    assert "group 'ml'" in str(refused.value)
    assert issubclass(DaskRefused, ValueError)
