"""The `omnikube-worker` command line: CLI > config.json > defaults, port = base + index."""

from __future__ import annotations

import json

import pytest

from omnikube_worker.cli import build_parser, settings_from_args


def settings(tmp_path, *argv: str, config: dict | None = None, env: dict | None = None, monkeypatch=None):
    path = tmp_path / "config.json"
    if config is not None:
        path.write_text(json.dumps(config))
    for key, value in (env or {}).items():
        monkeypatch.setenv(key, value)
    return settings_from_args(build_parser().parse_args(["--config", str(path), *argv]))


def test_defaults_are_the_seeds(tmp_path):
    s = settings(tmp_path)
    assert (s.port, s.host, s.gpu_id, s.worker_index) == (22400, "0.0.0.0", 0, 0)
    assert (s.model_path, s.pt_path, s.attn_implementation, s.pause_timeout) == ("openbmb/MiniCPM-o-4_5", None, "auto", 60.0)
    assert s.ref_audio_path == "assets/ref_audio/ref_minicpm_signature.wav" and s.compile is False


def test_port_is_the_base_port_plus_the_worker_index_and_gpu_id_follows_the_index(tmp_path):
    s = settings(tmp_path, "--worker-index", "3", config={"service": {"worker_base_port": 30000}})
    assert (s.port, s.gpu_id, s.worker_index) == (30003, 3, 3)


def test_config_file_values_apply_and_the_cli_wins_over_them(tmp_path):
    config = {"model": {"model_path": "/models/a", "pt_path": "/w.pt", "attn_implementation": "sdpa"},
              "service": {"compile": False}, "duplex": {"pause_timeout": 30}}
    s = settings(tmp_path, "--model-path", "/models/b", "--compile", "--duplex-pause-timeout", "5", "--port", "9999",
                 "--gpu-id", "1", "--host", "127.0.0.1", config=config)
    assert (s.model_path, s.pt_path, s.attn_implementation) == ("/models/b", "/w.pt", "sdpa")
    assert (s.compile, s.pause_timeout, s.port, s.gpu_id, s.host) == (True, 5.0, 9999, 1, "127.0.0.1")


def test_simulated_knobs_come_from_env_and_the_cli_overrides_them(tmp_path, monkeypatch):
    s = settings(tmp_path, "--backend", "simulated", "--sim-prefill-ms", "7",
                 env={"OMNIKUBE_SIM_PREFILL_MS": "300", "OMNIKUBE_SIM_TOKENS_PER_S": "99",
                      "OMNIKUBE_SIM_FAULT": "slow:2"}, monkeypatch=monkeypatch)
    assert s.backend == "simulated"
    assert (s.sim.prefill_ms, s.sim.tokens_per_s, s.sim.fault) == (7.0, 99.0, "slow:2")


def test_zero_delay_turns_every_delay_off(tmp_path):
    sim = settings(tmp_path, "--sim-zero-delay").sim
    assert sim.prefill_ms == sim.tokens_per_s == sim.duplex_step_ms == sim.load_s == 0


def test_backend_defaults_to_the_real_model_unless_the_environment_says_otherwise(tmp_path, monkeypatch):
    monkeypatch.delenv("OMNIKUBE_WORKER_BACKEND", raising=False)
    assert settings(tmp_path).backend == "minicpmo"
    monkeypatch.setenv("OMNIKUBE_WORKER_BACKEND", "simulated")
    assert settings(tmp_path).backend == "simulated"


def test_an_unknown_backend_is_refused(tmp_path):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--backend", "gpt"])


def test_a_broken_config_file_stops_the_worker_with_a_message(tmp_path, capsys):
    from omnikube_worker.cli import main

    path = tmp_path / "config.json"
    path.write_text("{broken")
    assert main(["--config", str(path), "--backend", "simulated"]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_a_bad_simulated_fault_spec_is_refused(tmp_path, monkeypatch, capsys):
    from omnikube_worker.cli import main

    monkeypatch.setenv("OMNIKUBE_SIM_TOKENS_PER_S", "fast")
    assert main(["--config", str(tmp_path / "none.json"), "--backend", "simulated"]) == 2
    assert "OMNIKUBE_SIM_TOKENS_PER_S" in capsys.readouterr().err
