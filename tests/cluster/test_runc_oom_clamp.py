"""dockerd's runtime wrapper clamps a negative oomScoreAdj (refused by this VM) and passes
everything else to runc untouched."""

import json
import subprocess
from pathlib import Path

WRAPPER = Path(__file__).resolve().parents[2] / "scripts" / "cluster" / "runc-oom-clamp"


def _run_wrapper(tmp_path: Path, *args: str, oom: int) -> tuple[dict, list[str]]:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "config.json").write_text(json.dumps({"process": {"oomScoreAdj": oom, "cwd": "/"}}))
    # A stand-in "runc" that records the arguments it was given.
    fake_runc = tmp_path / "runc"
    fake_runc.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/argv\n')
    fake_runc.chmod(0o755)
    subprocess.run([str(WRAPPER), *[a.replace("BUNDLE", str(bundle)) for a in args]],
                   env={"OMNIKUBE_REAL_RUNC": str(fake_runc)}, check=True, timeout=10)
    spec = json.loads((bundle / "config.json").read_text())
    return spec, (tmp_path / "argv").read_text().split()


def test_a_sandbox_asking_for_a_negative_oom_score_gets_zero(tmp_path):
    spec, argv = _run_wrapper(tmp_path, "--root", "/run/x", "create", "--bundle", "BUNDLE", "id1",
                              oom=-998)

    assert spec["process"]["oomScoreAdj"] == 0
    assert argv == ["--root", "/run/x", "create", "--bundle", str(tmp_path / "bundle"), "id1"]


def test_a_non_negative_oom_score_is_left_alone(tmp_path):
    spec, _ = _run_wrapper(tmp_path, "create", "--bundle", "BUNDLE", "id2", oom=1000)

    assert spec["process"] == {"oomScoreAdj": 1000, "cwd": "/"}
