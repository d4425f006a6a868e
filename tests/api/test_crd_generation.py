"""The CRD is generated from the pydantic model, and what is committed matches it."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from omnikube import crd
from omnikube.config import OmniConfig
from omnikube.spec import OmniDeploymentSpec, render_config

SAMPLES = sorted((crd.REPO_ROOT / "manifests" / "samples").glob("*.yaml"))


def _version() -> dict:
    return crd.build_crd()["spec"]["versions"][0]


def _walk(schema: dict, path: str = ""):
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from _walk(child, f"{path}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}.*")


def test_committed_crd_copies_match_the_model():
    assert crd.stale_outputs() == [], "run `omnikube-crd --write` and commit the result"


def test_check_reports_a_stale_copy(tmp_path: Path):
    for path in crd.OUTPUTS:
        (tmp_path / path).parent.mkdir(parents=True)
        (tmp_path / path).write_text(crd.render())
    assert crd.main(["--check", "--root", str(tmp_path)]) == 0
    (tmp_path / crd.OUTPUTS[0]).write_text(crd.render().replace("minimum: 0", "minimum: 5"))
    assert crd.main(["--check", "--root", str(tmp_path)]) == 1


def test_every_spec_and_status_field_has_a_description():
    schema = _version()["schema"]["openAPIV3Schema"]
    for part in ("spec", "status"):
        for path, node in _walk(schema["properties"][part], part):
            if path.endswith(("[]", ".*")):
                continue
            assert node.get("description"), f"{path} has no description"


def test_schema_is_structural():
    """Every node has a type (or is int-or-string), and no reference or title survives."""
    schema = _version()["schema"]["openAPIV3Schema"]
    for path, node in _walk(schema):
        assert "$ref" not in node and "title" not in node and "$defs" not in node, path
        assert node.get("type") or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        if node.get("x-kubernetes-preserve-unknown-fields"):
            assert path.endswith(".affinity"), f"{path}: pass-through only where unavoidable"


def test_seed_sections_keep_the_seed_defaults_enums_and_bounds():
    spec = _version()["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["model"]["properties"]["attnImplementation"]["enum"] == ["auto", "flash_attention_2", "sdpa", "eager"]
    assert spec["service"]["properties"]["gatewayPort"]["default"] == 8006
    assert spec["service"]["properties"]["workerBasePort"]["default"] == 22400
    assert spec["service"]["properties"]["requestTimeout"]["exclusiveMinimum"] is True
    assert spec["duplex"]["properties"]["pauseTimeout"]["default"] == 60.0
    assert spec["workers"]["properties"]["replicas"]["minimum"] == 0


def test_scale_subresource_points_at_worker_replicas():
    scale = _version()["subresources"]["scale"]
    assert scale["specReplicasPath"] == ".spec.workers.replicas"
    assert scale["labelSelectorPath"] == ".status.selector"


def test_an_empty_spec_renders_the_seed_default_config():
    assert render_config(OmniDeploymentSpec()) == OmniConfig()


def test_camel_case_spec_fields_render_into_seed_snake_case_keys():
    spec = OmniDeploymentSpec.model_validate({"service": {"maxQueueSize": 5, "etaEmaAlpha": 0.5}, "duplex": {"pauseTimeout": 9}})
    rendered = render_config(spec, model_path="/models").model_dump()
    assert rendered["service"]["max_queue_size"] == 5
    assert rendered["service"]["eta_ema_alpha"] == 0.5
    assert rendered["duplex"]["pause_timeout"] == 9
    assert rendered["model"]["model_path"] == "/models"


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_sample_is_a_valid_spec(sample: Path):
    document = yaml.safe_load(sample.read_text())
    assert document["kind"] == "OmniDeployment"
    OmniDeploymentSpec.model_validate(document["spec"])


def test_the_four_promised_samples_exist():
    assert {p.stem for p in SAMPLES} >= {"minimal", "full", "multi-gpu", "simulated"}
