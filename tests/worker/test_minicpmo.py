"""The minicpmo backend's loading rules on small torch modules: attention choice, pt_path override,
device choice. The model itself is tested through the worker process (test_minicpmo_process.py)."""

from __future__ import annotations

import pytest

from omnikube_worker.minicpmo import apply_attention, apply_weight_override, model_directory, resolve_attn_implementation
from omnikube_worker.model_device import resolve_device

torch = pytest.importorskip("torch", reason="torch is installed by scripts/setup.d/25-torch-cpu.sh")


# ---- attention ------------------------------------------------------------------------------------

@pytest.mark.parametrize("configured, flash, expected", [
    ("auto", True, "flash_attention_2"), ("auto", False, "sdpa"),
    ("sdpa", True, "sdpa"), ("eager", False, "eager"), ("flash_attention_2", True, "flash_attention_2"),
])
def test_attention_follows_the_guides_rule(configured, flash, expected):
    assert resolve_attn_implementation(configured, flash_available=flash) == expected


def test_forcing_flash_attention_without_flash_attn_fails_at_load():
    with pytest.raises(RuntimeError, match="flash-attn is not installed"):
        resolve_attn_implementation("flash_attention_2", flash_available=False)


def test_the_audio_encoder_always_gets_sdpa():
    from types import SimpleNamespace

    config = SimpleNamespace(llm_config=SimpleNamespace(), vision_config=SimpleNamespace(), audio_config=SimpleNamespace())
    apply_attention(config, "flash_attention_2")
    assert config._attn_implementation == config.llm_config._attn_implementation == "flash_attention_2"
    assert config.vision_config._attn_implementation == "flash_attention_2"
    assert config.audio_config._attn_implementation == "sdpa"


# ---- pt_path override -------------------------------------------------------------------------------

def test_pt_override_loads_matching_tensors_and_reports_the_rest(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    state = {"0.weight": torch.full((3, 4), 7.0), "0.bias": torch.zeros(3), "extra.weight": torch.ones(1)}
    path = tmp_path / "override.pt"
    torch.save({"state_dict": state}, path)
    report = apply_weight_override(model, str(path))
    assert torch.equal(model[0].weight, torch.full((3, 4), 7.0))
    assert report.loaded == 2
    assert sorted(report.missing) == ["1.bias", "1.weight"] and report.unexpected == ["extra.weight"]


def test_pt_override_that_is_not_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="expected a state dict"):
        apply_weight_override(torch.nn.Linear(2, 2), str(path))


# ---- model path ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("missing", ["/models/minicpmo-not-mounted", "./weights", "~/no-such-model"])
def test_a_model_path_that_is_not_there_says_so_instead_of_asking_the_hub(missing):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model_directory(missing)


def test_a_model_path_that_is_a_file_is_refused(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="is a file, not a model directory"):
        model_directory(str(weights))


# ---- device ------------------------------------------------------------------------------------------

def test_auto_device_is_the_cpu_on_a_machine_without_a_gpu():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_cuda_without_a_gpu_fails_at_load_with_the_reason():
    with pytest.raises(RuntimeError, match="torch sees no GPU"):
        resolve_device("cuda")


def test_an_unknown_device_is_refused():
    with pytest.raises(ValueError, match="unknown model.device"):
        resolve_device("tpu")
