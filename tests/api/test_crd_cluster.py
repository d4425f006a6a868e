"""The generated CRD on a real API server: installs, accepts every sample, rejects bad specs with a
clear message, scales, and explains itself."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from omnikube_operator.reconcile import contains
from tests.fixtures.omnideployment import SAMPLES, eventually


pytestmark = pytest.mark.cluster

SAMPLE_FILES = sorted(SAMPLES.glob("*.yaml"))


def _apply(omni, document: dict, check: bool = False):
    return omni.cluster.kubectl("apply", "-n", omni.namespace, "-f", "-", input=yaml.safe_dump(document), check=check)


def _sample_with_bad(field: str, value, section: str = "workers") -> dict:
    document = yaml.safe_load((SAMPLES / "minimal.yaml").read_text())
    document["spec"].setdefault(section, {})[field] = value
    return document


@pytest.mark.parametrize("sample", SAMPLE_FILES, ids=lambda p: p.stem)
def test_sample_is_accepted_and_stored_without_pruning(omni, sample: Path):
    document = yaml.safe_load(sample.read_text())
    omni.cluster.apply_manifest(sample, namespace=omni.namespace)
    stored = omni.get(document["metadata"]["name"])
    assert contains(stored["spec"], document["spec"]), "the API server dropped fields of the sample"


def test_an_empty_spec_gets_the_seed_defaults(omni):
    omni.create("defaults")
    spec = omni.get("defaults")["spec"]
    assert spec["service"]["gatewayPort"] == 8006
    assert spec["service"]["workerBasePort"] == 22400
    assert spec["model"]["attnImplementation"] == "auto"
    assert spec["duplex"]["pauseTimeout"] == 60
    assert spec["workers"]["replicas"] == 1


def test_negative_replicas_are_rejected_naming_the_field(omni):
    result = _apply(omni, _sample_with_bad("replicas", -1))
    assert result.returncode != 0
    assert "spec.workers.replicas" in result.stderr and "greater than or equal to 0" in result.stderr


def test_unknown_attn_implementation_is_rejected_listing_the_choices(omni):
    result = _apply(omni, _sample_with_bad("attnImplementation", "flash_attention_9", section="model"))
    assert result.returncode != 0
    assert "spec.model.attnImplementation" in result.stderr and "sdpa" in result.stderr


def test_wrong_type_is_rejected(omni):
    result = _apply(omni, _sample_with_bad("replicas", "two"))
    assert result.returncode != 0
    assert "spec.workers.replicas" in result.stderr and "integer" in result.stderr


def test_kubectl_scale_changes_the_worker_count(omni):
    omni.create("scaled")
    omni.cluster.kubectl("scale", "-n", omni.namespace, "omni/scaled", "--replicas=3")
    assert omni.get("scaled")["spec"]["workers"]["replicas"] == 3


def test_scale_subresource_reports_the_worker_selector(omni):
    omni.create("selected")
    omni.api.patch("omnikube.dev/v1alpha1", "OmniDeployment", omni.namespace, "selected",
                   {"status": {"replicas": 2, "selector": "omnikube.dev/deployment=selected"}}, "status")
    scale = json.loads(omni.cluster.kubectl("get", "--raw", f"/apis/omnikube.dev/v1alpha1/namespaces/{omni.namespace}"
                                            "/omnideployments/selected/scale").stdout)
    assert scale["status"] == {"replicas": 2, "selector": "omnikube.dev/deployment=selected"}


def test_printer_columns_show_ready_queue_and_phase(omni):
    omni.create("printed")
    omni.api.patch("omnikube.dev/v1alpha1", "OmniDeployment", omni.namespace, "printed",
                   {"status": {"ready": "1/2", "queueLength": 4, "phase": "Progressing"}}, "status")
    table = omni.cluster.kubectl("get", "omni", "-n", omni.namespace, "printed").stdout
    header, row = table.splitlines()[:2]
    assert header.split()[:4] == ["NAME", "READY", "QUEUE", "PHASE"]
    assert row.split()[:4] == ["printed", "1/2", "4", "Progressing"]


def test_kubectl_explain_prints_the_field_descriptions(omni):
    def explained() -> str:
        result = omni.cluster.kubectl("explain", "omnideployment.spec.workers", check=False)
        return result.stdout if "Number of worker pods" in result.stdout else ""

    text = eventually(explained, 60, "kubectl explain to show the workers' descriptions")
    assert "drainTimeoutSeconds" in text and "maxUnavailable" in text


@pytest.mark.parametrize("section, field", [("workers", "replica"), ("gateway", "replcas"), ("storage", "enable"),
                                            ("model", "modelPth"), ("service", "gatewayPrt")])
def test_a_misspelt_field_is_refused_by_kubectl_naming_it(omni, section, field):
    # The schema is structural and closed where users write (no preserve-unknown but affinity), so
    # kubectl validates against it: the API server itself (1.20) would prune the field silently.
    result = _apply(omni, _sample_with_bad(field, 1, section=section))
    assert result.returncode != 0
    assert f'unknown field "{field}"' in result.stderr and f"spec.{section}" in result.stderr
