"""The aifacility.platform Ansible collection: structure, argument specs, module arguments, syntax, and its
agreement with the facility file (MIG geometry, FPGA resources, storage class, node names and taints).

Nothing here reaches a cloud: `--syntax-check` and `ansible-doc` run offline with the collections unpacked by
conftest.py, and the roles' cloud tasks themselves are exercised only by a site's real run.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible.playbook.task import Task
from deploy_support import ANSIBLE, CHART
from test_chart import Z2JH_SCHEMA, _without_required  # the z2jh 4.4.0 schema the chart's own values pass

from aifacility.facility.model import Facility

ROLES = ("openstack_cluster", "k8s_bootstrap", "openstack_cloud_provider", "gpu_operator", "nfs_storage", "fpga_plugin",
         "cluster_ingress", "kueue", "aifacility", "interlink_edge")
VENV_BIN = Path(sys.executable).parent
TASK_KEYWORDS = set(Task.fattributes) | {"with_items", "with_dict"}
# Variables of a role start with its name (Ansible's convention, checked by ansible-lint too: roles never clash).
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
        prefix = role + "_"
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
    out: list[tuple[Path, dict[str, Any]]] = []
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
    servers = {s["name"]: s for s in _role("openstack_cluster", "defaults")["openstack_cluster_servers"]}
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
    openstack_cluster_ssh_user: ubuntu
    # What openstack.cloud.server registered for two VMs (the fields the role reads).
    openstack_cluster_created:
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
                                                              'public_ip', 'nfs_data_volume_id'])
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
                                        "private_ip": "192.168.42.10", "public_ip": "203.0.113.5"}
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
    assert "openstack_cluster_admin_cidr" not in _role("openstack_cluster", "defaults")  # the site must say
    world = _run_tasks(collections_path, tmp_path, "openstack_cluster", "guard.yml",
                       openstack_cluster_admin_cidr="0.0.0.0/0")
    assert world.returncode != 0
    assert "would be open to the whole internet" in world.stdout and "198.51.100.0/24" in world.stdout
    admins = _run_tasks(collections_path, tmp_path, "openstack_cluster", "guard.yml",
                        openstack_cluster_admin_cidr="198.51.100.0/24")
    assert admins.returncode == 0, admins.stdout + admins.stderr
    knowingly = _run_tasks(collections_path, tmp_path, "openstack_cluster", "guard.yml",
                           openstack_cluster_admin_cidr="0.0.0.0/0", openstack_cluster_admin_cidr_allow_world="true")
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


# --- the cluster a real OpenStack project gets: volumes, the cloud controller manager, the users' entry -------------

def _report(collections_path: str, tmp_path: Path, role: str, tasks_from: str, given: dict[str, Any],
            report: str = "{}") -> tuple[subprocess.CompletedProcess[str], Any]:
    """One of a role's task files, for real, on localhost, with `given` as extra vars (JSON, so typed); then the
    Jinja expression `report`, evaluated after it, as JSON."""
    out = tmp_path / "report.json"
    play = tmp_path / "report-play.yml"
    play.write_text(yaml.safe_dump([{
        "hosts": "localhost", "connection": "local", "gather_facts": False,
        "tasks": [{"name": "Run", "ansible.builtin.include_role": {"name": f"aifacility.platform.{role}",
                                                                    "tasks_from": tasks_from}},
                  {"name": "Report", "ansible.builtin.copy": {"dest": str(out), "mode": "0600",
                                                              "content": f"{{{{ ({report}) | to_json }}}}"}}]}]))
    extra = tmp_path / "extra.json"
    extra.write_text(json.dumps({**given, "ansible_python_interpreter": sys.executable}))
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": collections_path, "ANSIBLE_LOCALHOST_WARNING": "false"}
    out.unlink(missing_ok=True)
    proc = subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(play), "-e", f"@{extra}"],
                          capture_output=True, text=True, timeout=300, env=env)
    return proc, json.loads(out.read_text()) if proc.returncode == 0 else None


def _task(role: str, tasks_file: str, name: str) -> dict[str, Any]:
    (task,) = [t for t in _yaml(ANSIBLE / "roles" / role / "tasks" / tasks_file) if t["name"] == name]
    return task


CREDENTIAL = {"openstack_cloud_provider_auth_url": "https://keystone.example.org:5000/v3",
              "openstack_cloud_provider_application_credential_id": "4f1c0ffee",
              "openstack_cloud_provider_application_credential_secret": "s3cr3t-never-logged"}


def test_the_hub_database_claim_gets_a_default_cinder_class() -> None:
    # z2jh's hub-db-dir names no class: only a default one serves it, and only the Cinder class is default.
    sc = _task("openstack_cloud_provider", "main.yml", "Make the Cinder class the cluster's default")
    assert "when" not in sc
    definition = sc["kubernetes.core.k8s"]["definition"]
    assert definition["kind"] == "StorageClass" and definition["provisioner"] == "cinder.csi.openstack.org"
    assert definition["metadata"]["annotations"] == {"storageclass.kubernetes.io/is-default-class": "true"}
    assert definition["reclaimPolicy"] == "Retain"
    csi = _task("openstack_cloud_provider", "main.yml", "Install Cinder CSI")["kubernetes.core.helm"]
    assert "when" not in _task("openstack_cloud_provider", "main.yml", "Install Cinder CSI")
    assert csi["values"]["storageClass"] == {"enabled": False}  # the chart's two non-default classes
    # The NFS class stays the ReadWriteMany one for homes, and is not default.
    nfs = _task("nfs_storage", "provisioner.yml",
                "Install nfs-subdir-external-provisioner with the ReadWriteMany class")
    assert nfs["kubernetes.core.helm"]["values"]["storageClass"]["defaultClass"] is False
    assert nfs["kubernetes.core.helm"]["values"]["storageClass"]["accessModes"] == "ReadWriteMany"
    # Exactly one default class in the whole collection.
    texts = "\n".join(f.read_text() for f in (ANSIBLE / "roles").glob("*/tasks/*.yml"))
    assert texts.count("is-default-class") == 1
    # It exists before anything claims storage: the cloud provider is the cluster services' first role.
    play = _yaml(ANSIBLE / "playbooks" / "site.yml")[-1]
    roles = [r if isinstance(r, str) else r["role"] for r in play["roles"]]
    assert roles[0] == "aifacility.platform.openstack_cloud_provider"
    assert roles.index("aifacility.platform.aifacility") > 0


def test_the_cloud_provider_charts_follow_the_kubernetes_minor() -> None:
    version = _role("openstack_cloud_provider", "defaults")["openstack_cloud_provider_chart_version"]
    k8s_minor = _role("k8s_bootstrap", "defaults")["k8s_bootstrap_version"].split(".")[1]
    assert re.fullmatch(r"2\.(\d+)\.\d+", version)[1] == k8s_minor  # type: ignore[index]  # chart 2.33.x is v1.33
    charts = {t["kubernetes.core.helm"]["chart_ref"]: t["kubernetes.core.helm"]
              for t in _yaml(ANSIBLE / "roles" / "openstack_cloud_provider" / "tasks" / "main.yml")
              if "kubernetes.core.helm" in t}
    assert set(charts) == {"openstack-cloud-controller-manager", "openstack-cinder-csi"}
    for chart in charts.values():
        assert chart["chart_repo_url"] == "https://kubernetes.github.io/cloud-provider-openstack"
        assert chart["chart_version"] == "{{ openstack_cloud_provider_chart_version }}"
        # Both read the role's own Secret; neither chart writes the credential into its release.
        assert chart["values"]["secret"] == {"enabled": True, "create": False, "name": "cloud-config"}
    secret = _task("openstack_cloud_provider", "main.yml",
                   "Store cloud.conf for the cloud controller manager and Cinder CSI")
    assert secret["no_log"] is True
    assert secret["kubernetes.core.k8s"]["definition"]["metadata"]["name"] == "cloud-config"
    conf = _task("openstack_cloud_provider", "cloud_conf.yml", "Build cloud.conf from the application credential")
    assert conf["no_log"] is True
    spec = _role("openstack_cloud_provider", "meta")["argument_specs"]["main"]["options"]
    assert spec["openstack_cloud_provider_application_credential_secret"]["no_log"] is True


@pytest.mark.parametrize("ingress", ["octavia", "ingress-nginx"])
def test_cloud_conf_authenticates_with_the_application_credential_and_balances_only_for_octavia(
        collections_path: str, tmp_path: Path, ingress: str) -> None:
    proc, conf = _report(collections_path, tmp_path, "openstack_cloud_provider", "cloud_conf.yml",
                         {**CREDENTIAL, "aifacility_ingress": ingress,
                          "openstack_cloud_provider_floating_network_id": "8e1b-ext"},
                         report="openstack_cloud_provider_cloud_conf")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "s3cr3t-never-logged" not in proc.stdout + proc.stderr
    parser = configparser.ConfigParser()
    parser.read_string(conf)
    assert dict(parser["Global"]) == {"auth-url": "https://keystone.example.org:5000/v3",
                                      "application-credential-id": "4f1c0ffee",
                                      "application-credential-secret": "s3cr3t-never-logged"}
    assert parser["BlockStorage"]["ignore-volume-az"] == "true"
    if ingress == "octavia":
        assert dict(parser["LoadBalancer"]) == {"enabled": "true", "manage-security-groups": "true",
                                                "floating-network-id": "8e1b-ext"}
    else:
        assert dict(parser["LoadBalancer"]) == {"enabled": "false"}


@pytest.mark.parametrize("ccm", [True, False])
def test_kubelets_run_with_cloud_provider_external_exactly_when_the_site_installs_occm(
        collections_path: str, tmp_path: Path, ccm: bool) -> None:
    site = {"aifacility_openstack_ccm": ccm, "k8s_bootstrap_kubeadm_config_dir": str(tmp_path / "kubeadm"),
            "ansible_host": "203.0.113.5"}
    init, _ = _report(collections_path, tmp_path, "k8s_bootstrap", "kubeadm_config.yml",
                      {**site, "k8s_bootstrap_kubeadm": "init"})
    assert init.returncode == 0, init.stdout + init.stderr
    init_cfg, cluster_cfg = yaml.safe_load_all((tmp_path / "kubeadm" / "init.yaml").read_text())
    join_command = ("kubeadm join 192.168.42.10:6443 --token abcdef.0123456789abcdef"
                    " --discovery-token-ca-cert-hash sha256:42")
    join, _ = _report(collections_path, tmp_path, "k8s_bootstrap", "kubeadm_config.yml",
                      {**site, "k8s_bootstrap_kubeadm": "join", "k8s_bootstrap_join_command": join_command})
    assert join.returncode == 0, join.stdout + join.stderr
    assert "abcdef.0123456789abcdef" not in join.stdout  # the bootstrap token stays out of the log
    (join_cfg,) = yaml.safe_load_all((tmp_path / "kubeadm" / "join.yaml").read_text())
    external = [{"name": "cloud-provider", "value": "external"}]
    for cfg in (init_cfg, join_cfg):
        assert cfg["apiVersion"] == "kubeadm.k8s.io/v1beta4"
        assert cfg["nodeRegistration"]["name"] == "localhost"  # the inventory name, i.e. the Nova server's name
        assert cfg["nodeRegistration"].get("kubeletExtraArgs") == (external if ccm else None)
    assert init_cfg["kind"] == "InitConfiguration" and cluster_cfg["kind"] == "ClusterConfiguration"
    defaults = _role("k8s_bootstrap", "defaults")
    assert cluster_cfg["kubernetesVersion"] == f"stable-{defaults['k8s_bootstrap_version']}"
    assert cluster_cfg["networking"] == {"podSubnet": defaults["k8s_bootstrap_pod_cidr"],
                                         "serviceSubnet": defaults["k8s_bootstrap_service_cidr"]}
    assert cluster_cfg["apiServer"]["certSANs"] == ["203.0.113.5"]
    assert join_cfg["kind"] == "JoinConfiguration"
    assert join_cfg["discovery"]["bootstrapToken"] == {"apiServerEndpoint": "192.168.42.10:6443",
                                                       "token": "abcdef.0123456789abcdef",
                                                       "caCertHashes": ["sha256:42"]}
    # The cloud provider role reads the same site variable.
    assert _role("openstack_cloud_provider", "defaults")["openstack_cloud_provider_occm"] == \
        defaults["k8s_bootstrap_cloud_provider_external"] == "{{ aifacility_openstack_ccm | default(true) }}"


@pytest.mark.parametrize(("role", "tasks_from", "given", "needle"), [
    ("openstack_cluster", "guard.yml", {"openstack_cluster_admin_cidr": "198.51.100.0/24"}, "choose 'octavia'"),
    ("cluster_ingress", "validate.yml", {}, "choose 'octavia'"),
    ("openstack_cloud_provider", "validate.yml", CREDENTIAL, "choose 'octavia' or 'ingress-nginx'"),
])
def test_an_unknown_ingress_choice_is_refused_with_the_choices(collections_path: str, tmp_path: Path, role: str,
                                                              tasks_from: str, given: dict, needle: str) -> None:
    proc, _ = _report(collections_path, tmp_path, role, tasks_from, {**given, "aifacility_ingress": "nginx"})
    assert proc.returncode != 0 and "aifacility_ingress is 'nginx'" in proc.stdout and needle in proc.stdout, \
        proc.stdout
    # The roles' argument specs refuse it too, with the same choices.
    options = _role(role, "meta")["argument_specs"]["main"]["options"]
    (choice,) = [o for n, o in options.items() if n.endswith("_ingress") or n == "cluster_ingress_choice"]
    assert choice["choices"] == ["octavia", "ingress-nginx"]


def test_each_ingress_choice_gets_what_it_needs_before_anything_is_created(collections_path: str,
                                                                             tmp_path: Path) -> None:
    nginx_without_email, _ = _report(collections_path, tmp_path, "cluster_ingress", "validate.yml",
                                     {"aifacility_ingress": "ingress-nginx"})
    assert nginx_without_email.returncode != 0
    assert "set cluster_ingress_letsencrypt_email" in nginx_without_email.stdout
    no_occm = {**CREDENTIAL, "aifacility_ingress": "octavia", "aifacility_openstack_ccm": False}
    octavia_without_occm, _ = _report(collections_path, tmp_path, "openstack_cloud_provider", "validate.yml", no_occm)
    assert octavia_without_occm.returncode != 0 and "creates the Octavia load balancer" in octavia_without_occm.stdout
    no_credential, _ = _report(collections_path, tmp_path, "openstack_cloud_provider", "validate.yml",
                               {"openstack_cloud_provider_auth_url": "https://keystone.example.org:5000/v3",
                                "openstack_cloud_provider_application_credential_id": "",
                                "openstack_cloud_provider_application_credential_secret": ""})
    assert no_credential.returncode != 0 and "application_credential_secret" in no_credential.stdout
    for ok in ({"aifacility_ingress": "octavia"},
               {"aifacility_ingress": "ingress-nginx", "cluster_ingress_letsencrypt_email": "admin@example.org"}):
        proc, _ = _report(collections_path, tmp_path, "cluster_ingress", "validate.yml", ok)
        assert proc.returncode == 0, proc.stdout
    # The playbook runs these checks in its first play, before openstack_cluster creates anything.
    first = _yaml(ANSIBLE / "playbooks" / "site.yml")[0]
    included = [t["ansible.builtin.include_role"] for t in first["pre_tasks"]]
    checks = {i["name"].rsplit(".", 1)[1]: i["tasks_from"] for i in included}
    assert checks == {"openstack_cloud_provider": "validate.yml", "cluster_ingress": "validate.yml"}
    assert first["roles"] == ["aifacility.platform.openstack_cluster"]


@pytest.mark.parametrize(("ingress", "world", "public"), [
    ("octavia", [], ["kube_control_plane"]),
    ("ingress-nginx", [80, 443], ["kube_control_plane", "kube_ingress"]),
])
def test_security_group_and_floating_ips_per_ingress_choice(collections_path: str, tmp_path: Path, ingress: str,
                                                           world: list[int], public: list[str]) -> None:
    proc, report = _report(collections_path, tmp_path, "openstack_cluster", "guard.yml",
                           {"openstack_cluster_admin_cidr": "198.51.100.0/24", "aifacility_ingress": ingress},
                           report="[openstack_cluster_world_ports, openstack_cluster_public_groups]")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert report == [world, public]
    # The rules those facts drive: only 80/443 ever face the world, present or absent by the choice (a switch to
    # Octavia closes them again); SSH and the API face the admin network only.
    rules = [t for t in _yaml(ANSIBLE / "roles" / "openstack_cluster" / "tasks" / "main.yml")
             if "openstack.cloud.security_group_rule" in t]
    (to_world,) = [r for r in rules if r["openstack.cloud.security_group_rule"]["remote_ip_prefix"] == "0.0.0.0/0"]
    assert to_world["loop"] == [80, 443]
    assert to_world["openstack.cloud.security_group_rule"]["state"] == \
        "{{ 'present' if item in openstack_cluster_world_ports else 'absent' }}"
    (admin,) = [r for r in rules if r.get("loop") == [22, 6443]]
    assert admin["openstack.cloud.security_group_rule"]["remote_ip_prefix"] == "{{ openstack_cluster_admin_cidr }}"
    server = _task("openstack_cluster", "main.yml", "Create the VMs")["openstack.cloud.server"]
    assert server["auto_ip"] == "{{ item.groups | intersect(openstack_cluster_public_groups) | length > 0 }}"
    # The kube_ingress VM is a worker that k8s_bootstrap labels for cluster_ingress's ingress-nginx.
    servers = _role("openstack_cluster", "defaults")["openstack_cluster_servers"]
    ingress_vms = [s for s in servers if "kube_ingress" in s["groups"]]
    assert len(ingress_vms) == 1 and "kube_workers" in ingress_vms[0]["groups"]
    label = _role("cluster_ingress", "defaults")["cluster_ingress_node_label"]
    assert _role("k8s_bootstrap", "defaults")["k8s_bootstrap_node_labels"]["kube_ingress"] == [f"{label}=true"]
    nginx = _task("cluster_ingress", "nginx.yml", "Install ingress-nginx on the ingress nodes")
    nginx = nginx["kubernetes.core.helm"]
    assert nginx["values"]["controller"]["hostNetwork"] is True
    assert nginx["values"]["controller"]["nodeSelector"] == "{{ {cluster_ingress_node_label: 'true'} }}"
    assert "kube_ingress" in _yaml(ANSIBLE / "inventories" / "example" / "hosts.yml")["all"]["children"]


def test_the_example_chart_values_per_ingress_choice_are_valid_z2jh_values() -> None:
    schema = _without_required(yaml.safe_load(Z2JH_SCHEMA.read_text()))
    example = ANSIBLE / "inventories" / "example"
    group_vars = _yaml(example / "group_vars" / "all.yml")
    assert group_vars["aifacility_values_files"] == ["{{ inventory_dir }}/values-{{ aifacility_ingress }}.yml"]
    octavia = _yaml(example / "values-octavia.yml")["jupyterhub"]
    nginx = _yaml(example / "values-ingress-nginx.yml")["jupyterhub"]
    for values in (octavia, nginx):
        jsonschema.Draft7Validator(schema).validate(values)
    # Octavia: proxy-public is the LoadBalancer, z2jh's autohttps gets the certificate.
    assert octavia["proxy"]["service"]["type"] == "LoadBalancer"
    assert octavia["proxy"]["https"]["enabled"] is True and octavia["proxy"]["https"]["letsencrypt"]["contactEmail"]
    # ingress-nginx: proxy-public stays inside, the Ingress has the host, TLS and cert-manager's issuer.
    assert nginx["proxy"]["service"]["type"] == "ClusterIP" and nginx["proxy"]["https"]["enabled"] is False
    ingress = nginx["ingress"]
    assert ingress["enabled"] is True and ingress["ingressClassName"] == "nginx"
    issuer = _role("cluster_ingress", "defaults")["cluster_ingress_cluster_issuer"]
    assert ingress["annotations"]["cert-manager.io/cluster-issuer"] == issuer
    assert ingress["tls"][0]["hosts"] == ingress["hosts"]


def test_the_fpga_plugin_image_must_be_pinned_by_digest(collections_path: str, tmp_path: Path) -> None:
    """Xilinx publishes the device plugin only as :latest, which would change under a running cluster."""
    assert _role("fpga_plugin", "defaults")["fpga_plugin_image"] == ""
    latest = _run_tasks(collections_path, tmp_path, "fpga_plugin", "cluster.yml",
                        fpga_plugin_image="docker.io/xilinxatg/xilinx_k8s_fpga_plugin:latest")
    assert latest.returncode != 0
    assert "pin the Xilinx FPGA device plugin by digest" in latest.stdout
    pinned = _run_tasks(collections_path, tmp_path, "fpga_plugin", "cluster.yml",
                        fpga_plugin_kubeconfig=str(tmp_path / "absent.conf"),
                        fpga_plugin_image="docker.io/xilinxatg/xilinx_k8s_fpga_plugin@sha256:" + "ab" * 32)
    # Past the check: it stops only where it needs a cluster.
    assert "pin the Xilinx FPGA device plugin by digest" not in pinned.stdout
    assert "Label the FPGA nodes" in pinned.stdout
