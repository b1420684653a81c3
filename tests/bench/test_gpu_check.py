"""benchmarks/gpu_check.sh, exercised on the CPU with its tiny settings so that it cannot rot: the device and the
interpreter are taken from the environment, one small test file runs, then the speed benchmark (FLASH vs
Transformer++, fp32 and bf16) writes its report and the check's summary."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_check_runs_on_the_cpu_with_tiny_settings(tmp_path):
    env = dict(os.environ, GPU_CHECK_DEVICE="cpu", GPU_CHECK_QUICK="1", GPU_CHECK_OUT=str(tmp_path),
               PYTHON=sys.executable)
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = (tmp_path / "gpu-check.txt").read_text()
    assert "device cpu: " in summary and "tests: exit 0" in summary and "speed: exit 0" in summary
    assert " passed" in (tmp_path / "pytest.txt").read_text()
    rep = json.loads((tmp_path / "speed-quick.json").read_text())
    assert {(r["arch"], r["context"], r["precision"]) for r in rep["rows"]} == {
        (a, T, p) for a in ("flash", "transformer++") for T in (64,) for p in ("fp32", "bf16")}
    assert rep["env"]["machine"]["device"] == "cpu"
    assert (tmp_path / "speed-quick.md").read_text().count("device cpu") >= 2
