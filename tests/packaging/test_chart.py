"""The Helm chart renders what the issue promises, and nothing it should not: lint-clean, values
checked by the schema, a least-privilege operator, the dashboard for the Grafana sidecar, and the
plain manifests in manifests/install/ identical to a fresh render."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import yaml

from omnikube import labels
from omnikube_operator import handlers, rbac
from tests.fixtures.packaging import CHART, DASHBOARD, REPO, helm, render_chart

ALL_FEATURES = {"sample.enabled": True, "prometheusRule.enabled": True, "metrics.serviceMonitor.enabled": True}


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def allows(rules: list[dict], group: str, resource: str, verb: str) -> bool:
    return any(group in r.get("apiGroups", []) and resource in r.get("resources", []) and verb in r.get("verbs", [])
               for r in rules)


@pytest.mark.parametrize("values", [{}, ALL_FEATURES], ids=["defaults", "every-feature"])
def test_helm_lint_is_clean_in_strict_mode(values):
    args = [arg for key, value in values.items() for arg in ("--set-json", f"{key}={json.dumps(value)}")]
    proc = helm("lint", "--strict", str(CHART), *args)
    assert "0 chart(s) failed" in proc.stdout
    assert "[WARNING]" not in proc.stdout and "[ERROR]" not in proc.stdout


@pytest.mark.parametrize("key, value, complaint", [
    ("operator.logLevel", "loud", "/operator/logLevel"),
    ("operator.metricsPort", 70000, "/operator/metricsPort"),
    ("prometheusRule.queueWaitFor", "ten minutes", "/prometheusRule/queueWaitFor"),
    ("sample.name", "Not_A_Name", "/sample/name"),
    ("operator.typo", 1, "typo"),
])
def test_the_values_schema_rejects_a_bad_value_and_names_it(key, value, complaint):
    proc = helm("template", "x", str(CHART), "--set-json", f"{key}={json.dumps(value)}", check=False)
    assert proc.returncode != 0
    assert complaint in proc.stderr


def test_by_default_the_chart_installs_only_the_operator_and_its_dashboard():
    kinds = sorted(o["kind"] for o in render_chart())
    assert kinds == ["ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Service", "ServiceAccount"]


def test_the_operator_runs_non_root_on_a_read_only_root_filesystem():
    (deployment,) = by_kind(render_chart(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert container["command"] == ["omnikube-operator"]
    assert container["image"] == "omnikube/gateway:0.1.0"
    assert deployment["spec"]["replicas"] == 1  # kopf standalone: never two operators at once


def test_watch_namespaces_become_namespace_flags_and_the_default_watches_all():
    def args(values):
        (deployment,) = by_kind(render_chart(values), "Deployment")
        return deployment["spec"]["template"]["spec"]["containers"][0]["args"]

    assert "--all-namespaces" in args({})
    narrowed = args({"operator.watchNamespaces": ["team-a", "team-b"]})
    assert "--namespace=team-a" in narrowed and "--namespace=team-b" in narrowed
    assert "--all-namespaces" not in narrowed


def test_the_operator_flags_exist_in_its_cli():
    from omnikube_operator.cli import parse_args

    (deployment,) = by_kind(render_chart(), "Deployment")
    parse_args(deployment["spec"]["template"]["spec"]["containers"][0]["args"])  # exits on an unknown flag


def test_the_cluster_role_has_no_wildcards_and_updates_nothing_but_owner_finalizers():
    # `update` on omnideployments/finalizers is what OwnerReferencesPermissionEnforcement asks of
    # whoever sets blockOwnerDeletion on a child; everything else is patched, never replaced.
    (role,) = by_kind(render_chart(), "ClusterRole")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], rule
        assert "escalate" not in rule["verbs"] and "bind" not in rule["verbs"], rule
        if "update" in rule["verbs"]:
            assert rule["apiGroups"] == ["omnikube.dev"] and rule["resources"] == ["omnideployments/finalizers"], rule


def test_the_operator_holds_every_permission_it_grants_the_gateway():
    # Kubernetes refuses to let the operator create a Role granting more than it holds itself.
    (role,) = by_kind(render_chart(), "ClusterRole")
    for rule in _gateway_rules():
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert allows(role["rules"], group, resource, verb), (group, resource, verb)


def _gateway_rules() -> list[dict]:
    class Owner:  # just what build_role reads
        gateway = "x-gateway"
        namespace = "ns"

        def metadata(self, name, component):
            return {"name": name, "namespace": self.namespace}

        def adopt(self, obj):
            return obj

    return rbac.build_role(Owner())["rules"]


def test_the_operator_may_watch_every_kind_it_watches():
    (role,) = by_kind(render_chart(), "ClusterRole")
    watched = [(api_version, plural) for api_version, plural in handlers.CHILD_KINDS]
    watched.append((labels.API_VERSION, labels.PLURAL))
    for api_version, plural in watched:
        group = api_version.split("/")[0] if "/" in api_version else ""
        for verb in ("list", "watch"):
            assert allows(role["rules"], group, plural, verb), (group, plural, verb)
    assert allows(role["rules"], labels.GROUP, f"{labels.PLURAL}/status", "patch")


def test_every_cluster_role_rule_is_explained_by_a_comment():
    text = (CHART / "templates" / "clusterrole.yaml").read_text().split("kind: ClusterRoleBinding")[0]
    lines = text.splitlines()
    rule_starts = [i for i, line in enumerate(lines) if line.strip().startswith("- apiGroups:")]
    for i in rule_starts:
        above = lines[i - 1].strip()
        # A comment directly above, or the rule continues a commented block of related rules.
        assert above.startswith("#") or above.startswith("verbs:"), f"rule at line {i + 1} has no comment"


def test_the_dashboard_config_map_is_labelled_for_the_grafana_sidecar_and_holds_the_dashboard():
    (config_map,) = by_kind(render_chart(), "ConfigMap")
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["omnikube.json"]) == json.loads(DASHBOARD.read_text())


def test_the_dashboard_covers_queue_eta_workers_sessions_requests_latency_and_errors():
    exprs = " ".join(t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p.get("targets", []))
    for metric in ("omnikube_gateway_queue_length", "omnikube_gateway_queue_wait_seconds_bucket",
                   "omnikube_gateway_eta_seconds", "omnikube_gateway_workers", "omnikube_gateway_active_sessions",
                   "omnikube_gateway_requests_total", "omnikube_gateway_request_duration_seconds_bucket",
                   "omnikube_gateway_worker_failures_total", "omnikube_operator_reconciles_total"):
        assert metric in exprs, metric


def test_the_service_monitor_selects_the_operator_metrics_service():
    objects = render_chart(ALL_FEATURES)
    (monitor,) = by_kind(objects, "ServiceMonitor")
    (service,) = by_kind(objects, "Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]


def test_the_sample_is_deleted_by_a_pre_delete_hook_before_the_operator_goes():
    objects = render_chart(ALL_FEATURES)
    (sample,) = by_kind(objects, labels.KIND)
    assert sample["spec"]["backend"]["type"] == "simulated" and sample["spec"]["workers"]["replicas"] == 2
    hooks = [o for o in objects if o["metadata"].get("annotations", {}).get("helm.sh/hook") == "pre-delete"]
    assert sorted(o["kind"] for o in hooks) == ["Job", "Role", "RoleBinding", "ServiceAccount"]
    (role,) = by_kind(hooks, "Role")
    assert role["rules"] == [{"apiGroups": [labels.GROUP], "resources": [labels.PLURAL],
                              "resourceNames": [sample["metadata"]["name"]], "verbs": ["get", "delete"]}]


def test_the_plain_manifests_match_a_fresh_render_of_the_chart(tmp_path):
    spec = importlib.util.spec_from_file_location("render_manifests", REPO / "scripts" / "render-manifests.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, text in module.render().items():
        committed = REPO / "manifests" / "install" / name
        assert committed.read_text() == text, f"{committed} is stale: run .venv/bin/python scripts/render-manifests.py"


def test_the_chart_crd_is_the_generated_one():
    assert (CHART / "crds" / "omnideployments.yaml").read_text() == (REPO / "manifests" / "crd" / "omnideployments.yaml").read_text()


@pytest.mark.parametrize("kind, api_version", [("HorizontalPodAutoscaler", "autoscaling/v2"), ("KEDA", "keda.sh/v1alpha1")])
def test_the_hpa_and_keda_examples_scale_the_omnideployments_scale_subresource_on_the_gateways_queue(kind, api_version):
    from omnikube.metric_names import GATEWAY_ETA_SECONDS, GATEWAY_QUEUE_LENGTH

    (scaler,) = render_chart({"externalAutoscaler.kind": kind, "externalAutoscaler.target": "omni",
                              "externalAutoscaler.maxReplicas": 6}, show_only="templates/external-autoscaler.yaml")
    assert scaler["apiVersion"] == api_version
    assert scaler["spec"]["scaleTargetRef"] == {"apiVersion": labels.API_VERSION, "kind": labels.KIND, "name": "omni"}
    text = str(scaler["spec"])
    assert GATEWAY_QUEUE_LENGTH in text and (kind != "KEDA" or GATEWAY_ETA_SECONDS in text)
    assert scaler["spec"].get("maxReplicas", scaler["spec"].get("maxReplicaCount")) == 6
    crd = yaml.safe_load((REPO / "manifests" / "crd" / "omnideployments.yaml").read_text())
    scale = crd["spec"]["versions"][0]["subresources"]["scale"]
    assert scale["specReplicasPath"] == ".spec.workers.replicas"


def test_no_external_autoscaler_is_rendered_unless_asked():
    assert not [o for o in render_chart() if o["kind"] in ("HorizontalPodAutoscaler", "ScaledObject")]
