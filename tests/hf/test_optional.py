"""transformers is optional: `import flashgau` and everything outside flashgau.hf work without it, flashgau.hf says
how to install it, and `flashgau export` says so in one line. (These tests run with or without transformers.)"""

import os
import subprocess
import sys
from pathlib import Path

import flashgau

SRC = Path(flashgau.__file__).resolve().parent

HIDE = "import sys; sys.modules['transformers'] = None  # as if not installed\n"


def _python(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC.parent), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", HIDE + code], capture_output=True, text=True, env=env, timeout=300)


def test_flashgau_works_without_transformers():
    done = _python(
        "import torch, flashgau\n"
        "from flashgau import LanguageModel, ModelConfig\n"
        "import flashgau.cli, flashgau.training.trained, flashgau.data\n"
        "m = LanguageModel(ModelConfig.preset('tiny', vocab_size=50))\n"
        "print(m.generate(torch.ones(1, 3, dtype=torch.long), 2, temperature=0).shape)\n"
        "try:\n"
        "    import flashgau.hf\n"
        "except ImportError as err:\n"
        "    print('hf:', err)\n")
    assert done.returncode == 0, done.stderr
    assert "torch.Size([1, 5])" in done.stdout
    assert "hf: flashgau.hf needs Hugging Face transformers: pip install 'flashgau[hf]'" in done.stdout


def test_export_without_transformers_is_one_line(tmp_path):
    done = _python(f"from flashgau.cli import main; raise SystemExit(main(['export', {str(tmp_path)!r}, "
                   f"{str(tmp_path / 'out')!r}]))")
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == "flashgau export: error: flashgau.hf needs Hugging Face transformers: pip install " \
                          "'flashgau[hf]'\n"


def test_only_flashgau_hf_imports_transformers():
    for path in SRC.rglob("*.py"):
        if SRC / "hf" in path.parents:
            continue
        text = path.read_text(encoding="utf-8")
        assert "import transformers" not in text and "from transformers" not in text, path
