"""The aifacility.platform Ansible collection: structure, argument specs, module arguments, syntax, and its
agreement with the facility file (MIG geometry, FPGA resources, storage class, node names and taints).

Nothing here reaches a cloud: `--syntax-check` and `ansible-doc` run offline with the collections unpacked by
conftest.py, and the roles' cloud tasks themselves are exercised only by a site's real run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.playbook.task import Task
from deploy_support import ANSIBLE, CHART

from aifacility.facility.model import Facility

ROLES = ("openstack_cluster", "k8s_bootstrap", "gpu_operator", "nfs_storage", "fpga_plugin", "aifacility")
VENV_BIN = Path(sys.executable).parent
TASK_KEYWORDS = set(Task.fattributes) | {"with_items", "with_dict"}
# Variables of a role start with its prefix (Ansible's convention, so roles never clash).
PREFIX = {"openstack_cluster": "openstack_"}
# Modules whose keys are variables, not options.
FREE_KEYS = {"ansible.builtin.add_host", "ansible.builtin.set_fact"}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def _role(name: str, part: str) -> Any:
    return _yaml(ANSIBLE / "roles" / name / part / "main.yml")


def test_every_yaml_file_parses() -> None:
    files = sorted(ANSIBLE.rglob("*.yml"))
    assert len(files) > 20
    for f in files:
        assert yaml.safe_load(f.read_text()) is not None, f"{f} is empty"


def test_collection_metadata() -> None:
    galaxy = _yaml(ANSIBLE / "galaxy.yml")
    assert (galaxy["namespace"], galaxy["name"]) == ("aifacility", "platform")
    assert set(galaxy["dependencies"]) == {"openstack.cloud", "kubernetes.core", "ansible.posix", "community.general"}
    assert sorted(p.name for p in (ANSIBLE / "roles").iterdir()) == sorted(ROLES)


@pytest.mark.parametrize("role", ROLES)
def test_role_has_the_standard_files_and_a_valid_argument_spec(role: str) -> None:
    for part in ("defaults", "tasks", "meta"):
        assert (ANSIBLE / "roles" / role / part / "main.yml").is_file(), f"{role}: {part}/main.yml missing"
    meta = _role(role, "meta")
    assert meta["galaxy_info"]["license"] == "Apache-2.0"
    spec = meta["argument_specs"]["main"]
    options = spec["options"]
    assert spec["short_description"]
    for name, option in options.items():
        prefix = PREFIX.get(role, role + "_")
        assert name.startswith(prefix), f"{role}: option {name} does not start with {prefix}"
        assert option.get("description"), f"{role}: option {name} has no description"
    defaults = _role(role, "defaults")
    # Every default is declared, and every declared option without a default is something a site must give.
    assert set(defaults) <= set(options), set(defaults) - set(options)
    for name in set(options) - set(defaults):
        assert options[name].get("required"), f"{role}: {name} has neither a default nor required: true"
    # The spec is one Ansible accepts, and the defaults satisfy it (templated values are strings until run time,
    # so those are checked for presence only).
    validator = ArgumentSpecValidator(options)
    given = {k: v for k, v in defaults.items() if not (isinstance(v, str) and "{{" in v)}
    required_at_run_time = {k for k in options if k not in given}
    result = validator.validate({**given, **{k: _placeholder(options[k]) for k in required_at_run_time}})
    assert not result.error_messages, result.error_messages


def _placeholder(option: dict[str, Any]) -> Any:
    """A value of the option's type, standing in for one that is templated or given by the site."""
    if "choices" in option:
        return option["choices"][0]
    return {"str": "x", "path": "/x", "int": 1, "bool": True, "dict": {}, "list": []}[option.get("type", "str")]


def _tasks(role: str) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for f in sorted((ANSIBLE / "roles" / role).glob("*/*.yml")):
        if f.parent.name in ("tasks", "handlers"):
            out.extend((f, t) for t in _yaml(f))
    return out


def _module(task: dict[str, Any]) -> str:
    (module,) = [k for k in task if k not in TASK_KEYWORDS]
    return module


def test_included_task_files_exist() -> None:
    for role in ROLES:
        for f, task in _tasks(role):
            module = _module(task)
            if module in ("ansible.builtin.include_tasks", "ansible.builtin.import_tasks"):
                assert (f.parent / task[module]).is_file(), f"{f}: {task[module]} missing"


@pytest.fixture(scope="module")
def module_docs(collections_path: str) -> dict[str, Any]:
    modules = sorted({_module(t) for role in ROLES for _f, t in _tasks(role)})
    assert all(m.count(".") == 2 for m in modules), f"use fully qualified module names: {modules}"
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": collections_path}
    proc = subprocess.run([str(VENV_BIN / "ansible-doc"), "--json", "-t", "module", *modules],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    docs = json.loads(proc.stdout)
    assert set(docs) == set(modules), set(modules) - set(docs)
    return docs


def test_every_task_uses_only_its_module_options(module_docs: dict[str, Any]) -> None:
    for role in ROLES:
        for f, task in _tasks(role):
            module = _module(task)
            args = task[module]
            if not isinstance(args, dict):
                continue  # free-form (command/include) arguments
            if module in FREE_KEYS:
                args = {k: v for k, v in args.items() if k in ("name", "groups", "cacheable")}
            args = {**args, **task.get("args", {})}
            options = module_docs[module]["doc"].get("options", {})
            known = set(options) | {a for o in options.values() for a in o.get("aliases", [])}
            unknown = set(args) - known
            assert not unknown, f"{f.relative_to(ANSIBLE)}: '{task.get('name')}' gives {module} unknown {unknown}"
            for opt, value in args.items():
                name = opt if opt in options else next(k for k, o in options.items() if opt in o.get("aliases", []))
                choices = options[name].get("choices")
                if choices and isinstance(value, str) and "{{" not in value:
                    assert value in choices, f"{f.relative_to(ANSIBLE)}: {module} {opt}={value} not in {choices}"


def test_the_playbook_passes_syntax_check(collections_path: str) -> None:
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": collections_path}
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(ANSIBLE / "inventories/example/hosts.yml"),
                           "--syntax-check", str(ANSIBLE / "playbooks/site.yml")],
                          capture_output=True, text=True, timeout=300, env=env, cwd=ANSIBLE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "playbook: " in proc.stdout
    # Every role of the collection is used by the playbook.
    site = (ANSIBLE / "playbooks" / "site.yml").read_text()
    for role in ROLES:
        assert f"aifacility.platform.{role}" in site


def test_syntax_check_catches_an_unknown_role(collections_path: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("- hosts: localhost\n  roles: [aifacility.platform.no_such_role]\n")
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": collections_path}
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "--syntax-check", str(bad)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode != 0 and "no_such_role" in proc.stdout + proc.stderr


# --- the collection agrees with the facility file ------------------------------------------------------------------

@pytest.fixture(scope="module")
def facility(values: dict) -> Facility:
    return Facility.model_validate(values["facility"])


def test_mig_geometry_gives_the_facility_s_slices(facility: Facility) -> None:
    defaults = _role("gpu_operator", "defaults")
    assert defaults["gpu_operator_mig_strategy"] == "mixed"
    mig_nodes = {n.name: n for n in facility.nodes if "nvidia.com/mig.config" in n.labels}
    assert mig_nodes, "the facility has MIG nodes"
    assert defaults["gpu_operator_mig_nodes"] == {n: node.labels["nvidia.com/mig.config"]
                                                  for n, node in mig_nodes.items()}
    for name, node in mig_nodes.items():
        rules = defaults["gpu_operator_mig_configs"][node.labels["nvidia.com/mig.config"]]
        gpus = int(node.labels["nvidia.com/gpu.count"])
        slices: dict[str, int] = {}
        for rule in rules:
            assert rule["devices"] == "all" and rule["mig-enabled"] is True
            for profile, count in rule["mig-devices"].items():
                slices[f"nvidia.com/mig-{profile}"] = count * gpus
        advertised = {facility.accelerator(a).resource: n for a, n in node.accelerators.items()}
        assert slices == advertised, f"{name}: mig-parted gives {slices}, the facility file says {advertised}"
        # An A100 has 7 compute slices; a geometry must fit in them.
        per_gpu = sum(int(re.match(r"(\d+)g", p).group(1)) * c  # type: ignore[union-attr]
                      for rule in rules for p, c in rule["mig-devices"].items())
        assert per_gpu <= 7


def test_fpga_plugin_waits_for_the_facility_s_fpga_resources(facility: Facility) -> None:
    defaults = _role("fpga_plugin", "defaults")
    fpgas = [a for a in facility.accelerators if a.kind == "fpga"]
    assert sorted(defaults["fpga_plugin_expected_resources"]) == sorted(a.resource for a in fpgas)
    for node, value in defaults["fpga_plugin_nodes"].items():
        labels = facility.nodes[[n.name for n in facility.nodes].index(node)].labels
        assert labels[defaults["fpga_plugin_node_label"]] == value
    assert all(a.node_selector == {defaults["fpga_plugin_node_label"]: "alveo-v70"} for a in fpgas)


def test_storage_class_is_the_facility_s(facility: Facility) -> None:
    assert _role("nfs_storage", "defaults")["nfs_storage_class"] == facility.storage.storage_class


def test_vms_and_taints_match_the_facility_nodes(facility: Facility) -> None:
    servers = {s["name"]: s for s in _role("openstack_cluster", "defaults")["openstack_servers"]}
    taints = _role("k8s_bootstrap", "defaults")["k8s_bootstrap_node_taints"]
    for node in facility.nodes:
        if node.interlink:
            assert node.name not in servers  # virtual nodes are interLink's, not VMs
            continue
        assert node.name in servers, f"no VM for the facility node {node.name}"
        groups = servers[node.name]["groups"]
        expected = {f"{t.key}={t.value}:{t.effect}" for t in node.taints}
        given = {t for g in groups for t in taints.get(g, [])}
        assert given == expected, f"{node.name}: VM taints {given}, facility {expected}"


# --- running a role's logic for real, on localhost ------------------------------------------------------------------

INVENTORY_PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  vars:
    openstack_cluster_name: site
    openstack_ssh_user: ubuntu
    # What openstack.cloud.server registered for two VMs (the fields the role reads).
    openstack_cluster_servers:
      results:
        - item: {name: cp-01, groups: [kube_control_plane]}
          server: {addresses: {site-net: [{addr: 192.168.42.10, "OS-EXT-IPS:type": fixed},
                                          {addr: 203.0.113.5, "OS-EXT-IPS:type": floating}]}}
        - item: {name: gpu-a100-01, groups: [kube_workers, gpu_workers, mig_workers]}
          server: {addresses: {site-net: [{addr: 192.168.42.11, "OS-EXT-IPS:type": fixed}]}}
        - item: {name: nfs-01, groups: [nfs_server]}
          server: {addresses: {site-net: [{addr: 192.168.42.12, "OS-EXT-IPS:type": fixed}]}}
    # What openstack.cloud.volume registered for the NFS data volume.
    openstack_cluster_nfs_volume: {volume: {id: 6f0c2b9e-41d7-4a8e-9b1e-2d3c4f5a6b7c}}
  tasks:
    - name: Add the VMs
      ansible.builtin.include_role:
        name: aifacility.platform.openstack_cluster
        tasks_from: inventory.yml
    - name: Report the inventory
      ansible.builtin.copy:
        dest: "{{ out }}"
        mode: "0600"
        content: >-
          {{ {'groups': groups,
              'hosts': dict(['cp-01', 'gpu-a100-01', 'nfs-01'] | zip(['cp-01', 'gpu-a100-01', 'nfs-01']
                            | map('extract', hostvars) | map('dict2items')
                            | map('selectattr', 'key', 'in', ['ansible_host', 'ansible_user', 'private_ip',
                                                              'nfs_data_volume_id'])
                            | map('items2dict')))} | to_json }}
"""


def test_provisioned_vms_join_the_inventory_with_their_addresses(collections_path: str, tmp_path: Path) -> None:
    play = tmp_path / "inventory.yml"
    play.write_text(INVENTORY_PLAY)
    out = tmp_path / "out.json"
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": collections_path, "ANSIBLE_LOCALHOST_WARNING": "false"}
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(play), "-e", f"out={out}",
                           "-e", f"ansible_python_interpreter={sys.executable}"],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["groups"]["kube_control_plane"] == ["cp-01"]
    assert report["groups"]["mig_workers"] == ["gpu-a100-01"]
    # The control plane is reached on its floating IP, the others on their private one (through ProxyJump).
    assert report["hosts"]["cp-01"] == {"ansible_host": "203.0.113.5", "ansible_user": "ubuntu",
                                        "private_ip": "192.168.42.10"}
    assert report["hosts"]["gpu-a100-01"] == {"ansible_host": "192.168.42.11", "ansible_user": "ubuntu",
                                              "private_ip": "192.168.42.11"}
    # The NFS VM knows its data volume by id (and only it has one).
    assert report["hosts"]["nfs-01"]["nfs_data_volume_id"] == "6f0c2b9e-41d7-4a8e-9b1e-2d3c4f5a6b7c"


def _run_tasks(collections_path: str, tmp_path: Path, role: str, tasks_from: str,
               **extra: str) -> subprocess.CompletedProcess[str]:
    """One of a role's task files, for real, on localhost."""
    play = tmp_path / "play.yml"
    play.write_text(yaml.safe_dump([{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "tasks": [{"name": "Run", "ansible.builtin.include_role": {"name": f"aifacility.platform.{role}",
                                                                    "tasks_from": tasks_from}}]}]))
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": collections_path, "ANSIBLE_LOCALHOST_WARNING": "false"}
    args = [a for k, v in extra.items() for a in ("-e", f"{k}={v}")]
    return subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(play), *args,
                           "-e", f"ansible_python_interpreter={sys.executable}"],
                          capture_output=True, text=True, timeout=300, env=env)


def test_ssh_and_the_api_are_not_opened_to_the_world_by_default(collections_path: str, tmp_path: Path) -> None:
    assert "openstack_admin_cidr" not in _role("openstack_cluster", "defaults")  # the site must say
    world = _run_tasks(collections_path, tmp_path, "openstack_cluster", "guard.yml", openstack_admin_cidr="0.0.0.0/0")
    assert world.returncode != 0
    assert "would be open to the whole internet" in world.stdout and "198.51.100.0/24" in world.stdout
    admins = _run_tasks(collections_path, tmp_path, "openstack_cluster", "guard.yml",
                        openstack_admin_cidr="198.51.100.0/24")
    assert admins.returncode == 0, admins.stdout + admins.stderr
    knowingly = _run_tasks(collections_path, tmp_path, "openstack_cluster", "guard.yml",
                           openstack_admin_cidr="0.0.0.0/0", openstack_admin_cidr_allow_world="true")
    assert knowingly.returncode == 0, knowingly.stdout + knowingly.stderr


def test_the_nfs_volume_is_found_by_its_id_not_by_attach_order(collections_path: str, tmp_path: Path) -> None:
    by_id = _run_tasks(collections_path, tmp_path, "nfs_storage", "device.yml",
                       nfs_data_volume_id="6f0c2b9e-41d7-4a8e-9b1e-2d3c4f5a6b7c", nfs_storage_device_timeout="1")
    assert by_id.returncode != 0  # no such disk on this machine: it waits for that one, never takes another
    assert "/dev/disk/by-id/virtio-6f0c2b9e-41d7-4a8e-9" in by_id.stdout, by_id.stdout
    nothing = _run_tasks(collections_path, tmp_path, "nfs_storage", "device.yml")
    assert nothing.returncode != 0 and "set nfs_storage_device" in nothing.stdout, nothing.stdout
    disk = tmp_path / "disk"
    disk.touch()
    given = _run_tasks(collections_path, tmp_path, "nfs_storage", "device.yml", nfs_storage_device=str(disk))
    assert given.returncode == 0, given.stdout + given.stderr


def test_the_chart_install_adds_every_https_repository_the_chart_needs() -> None:
    chart = _yaml(CHART / "Chart.yaml")
    needed = {d["repository"] for d in chart["dependencies"] if d["repository"].startswith("https://")}
    tasks = _yaml(ANSIBLE / "roles" / "aifacility" / "tasks" / "main.yml")
    (repos,) = [t for t in tasks if "kubernetes.core.helm_repository" in t]
    assert {r["url"] for r in repos["loop"]} == needed


def test_the_fpga_hosts_get_the_board_s_shell_not_xrt_alone(collections_path: str, tmp_path: Path) -> None:
    nothing = _run_tasks(collections_path, tmp_path, "fpga_plugin", "host.yml")
    assert nothing.returncode != 0 and "fpga_plugin_xrt_deb_url is empty" in nothing.stdout, nothing.stdout
    xrt_only = _run_tasks(collections_path, tmp_path, "fpga_plugin", "host.yml",
                          fpga_plugin_xrt_deb_url=str(tmp_path / "xrt.deb"))
    assert xrt_only.returncode != 0 and "fpga_plugin_shell_deb_urls is empty" in xrt_only.stdout, xrt_only.stdout
    tasks = _yaml(ANSIBLE / "roles" / "fpga_plugin" / "tasks" / "host.yml")
    names = [t["name"] for t in tasks]
    assert names.index("Install the board's deployment platform") > names.index("Install XRT")
