"""An exported folder loads by path alone: a fresh Python that never imported flashgau gets flashgau's logits,
tokens and greedy text from `AutoConfig` / `AutoModelForCausalLM` / `AutoModelForMaskedLM` / `AutoTokenizer
.from_pretrained(folder, trust_remote_code=True)` (the classes of the folder's own code files), says in one line
that flashgau must be installed when it is not, and a model loaded either way and saved again keeps its code files.
The slow test scores an exported model with EleutherAI's lm-evaluation-harness (`lm-eval`, the `eval` extra) on a
local task (tests/hf/lm_eval), offline, and checks its scores against flashgau's own log-likelihoods."""

import glob
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_helpers import NEEDS_HF, TINY_RUN

pytest.importorskip("transformers", reason=NEEDS_HF)

from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer  # noqa: E402

import flashgau  # noqa: E402
from flashgau.cli import main  # noqa: E402
from flashgau.hf import FlashgauForCausalLM, add_remote_code  # noqa: E402
from flashgau.hf.remote_code import CODE_FILES  # noqa: E402
from flashgau.training.trained import load_trained  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TASKS = Path(__file__).resolve().parent / "lm_eval"
TEXT = {"causal": "KING. Good morrow, my lord.", "masked": "KING. Good morrow, my<mask>lord."}

# Run in a fresh interpreter: load the folder by path (flashgau blocked first, to see the message without it),
# score TEXT, generate (causal), save the loaded model and tokenizer again.
LOAD_BY_PATH = """
import sys
import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer
kind, folder, text, out, resaved = sys.argv[1:]
assert "flashgau" not in sys.modules


class NotInstalled:                                 # flashgau as if not installed
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "flashgau":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)


sys.meta_path.insert(0, NotInstalled())
try:
    AutoConfig.from_pretrained(folder, trust_remote_code=True)
    missing = None
except ImportError as err:
    missing = str(err)
del sys.meta_path[0]
auto = AutoModelForCausalLM if kind == "causal" else AutoModelForMaskedLM
model = auto.from_pretrained(folder, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
ids = tokenizer(text, return_tensors="pt")["input_ids"]
with torch.no_grad():
    result = {"missing": missing, "ids": ids, "logits": model(ids).logits, "causal": config.causal,
              "modules": [type(model).__module__, type(tokenizer).__module__]}
    if kind == "causal":
        result["generated"] = model.generate(ids, max_new_tokens=8, do_sample=False)
model.save_pretrained(resaved)
tokenizer.save_pretrained(resaved)
torch.save(result, out)
"""


def _fresh_env(tmp_path: Path) -> dict:
    """The environment of a fresh process: this checkout's flashgau importable (not imported), transformers' module
    cache and the datasets cache in tmp_path, nothing fetched from the Hub."""
    src = str(Path(flashgau.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
            "HF_MODULES_CACHE": str(tmp_path / "hf-modules"), "HF_DATASETS_CACHE": str(tmp_path / "hf-datasets"),
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}


@pytest.fixture(scope="module", params=["causal", "masked"])
def exported(request, small_corpus, tmp_path_factory):
    """(kind, run, folder): a tiny FLASH run exported; causal with bytes, masked (MLM) with a BPE tokenizer."""
    kind = request.param
    root = tmp_path_factory.mktemp(f"remote-{kind}")
    extra = [] if kind == "causal" else ["--objective", "mlm", "--tokenizer", "bpe", "--bpe-vocab-size", "300"]
    assert main(["train", *TINY_RUN, *extra, "--data", str(small_corpus), "--out", str(root / "run")]) == 0
    assert main(["export", str(root / "run"), str(root / "hf")]) == 0
    return kind, root / "run", root / "hf"


def _auto_maps(folder: Path) -> tuple:
    return tuple(json.loads((folder / name).read_text())["auto_map"] for name in ("config.json",
                                                                               "tokenizer_config.json"))


def test_the_export_names_its_code_in_auto_map(exported):
    kind, run, out = exported
    model, tokenizer = _auto_maps(out)
    want = "CausalLM" if kind == "causal" else "MaskedLM"
    assert model == {"AutoConfig": "configuration_flashgau.FlashgauConfig",
                     f"AutoModelFor{want}": f"modeling_flashgau.FlashgauFor{want}"}
    name = "FlashgauByteTokenizer" if kind == "causal" else "FlashgauBPETokenizer"
    assert tokenizer == {"AutoTokenizer": [f"tokenization_flashgau.{name}", None]}
    assert {p.name for p in out.glob("*.py")} == set(CODE_FILES)
    assert "trust_remote_code=True" in (out / "README.md").read_text()


def test_a_fresh_python_loads_the_export_by_path_with_flashgaus_numbers(exported, tmp_path):
    kind, run, out = exported
    result_file, resaved = tmp_path / "result.pt", tmp_path / "resaved"
    done = subprocess.run([sys.executable, "-c", LOAD_BY_PATH, kind, str(out), TEXT[kind], str(result_file),
                           str(resaved)], capture_output=True, text=True, env=_fresh_env(tmp_path), timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = torch.load(result_file)
    assert got["missing"] == ("this model's code is in the flashgau package, which is not installed: "
                              "pip install 'flashgau[hf]', then load the model again")
    assert all(module.startswith("transformers_modules.") for module in got["modules"])   # the folder's code files
    assert got["causal"] == (kind == "causal")
    trained = load_trained(run)
    before, _, after = TEXT[kind].partition("<mask>")         # flashgau's encode never makes the mask token
    tokenizer = trained.tokenizer
    want = tokenizer.encode(TEXT[kind]) if kind == "causal" else (tokenizer.encode(before) + [tokenizer.mask_token_id]
                                                                  + tokenizer.encode(after))
    assert got["ids"][0].tolist() == want
    with torch.no_grad():
        torch.testing.assert_close(got["logits"], trained.model(got["ids"]).logits)
    if kind == "causal":
        assert torch.equal(got["generated"], trained.model.generate(got["ids"], 8, temperature=0))
    # saved again by the classes transformers loaded from the folder: the same code files and auto_map
    assert _auto_maps(resaved) == _auto_maps(out)
    assert all((resaved / name).read_bytes() == (out / name).read_bytes() for name in CODE_FILES)


def test_a_folder_saved_again_by_flashgaus_own_classes_keeps_its_code(exported, tmp_path):
    kind, _, out = exported
    auto = AutoModelForCausalLM if kind == "causal" else AutoModelForMaskedLM
    model, tokenizer = auto.from_pretrained(out), AutoTokenizer.from_pretrained(out)    # flashgau.hf imported
    assert type(model).__module__ == "flashgau.hf.modeling"
    model.save_pretrained(tmp_path / "again")
    tokenizer.save_pretrained(tmp_path / "again")
    assert _auto_maps(tmp_path / "again") == _auto_maps(out)
    assert all((tmp_path / "again" / name).read_bytes() == (out / name).read_bytes() for name in CODE_FILES)


def test_add_remote_code_makes_a_saved_folder_loadable_by_path(build, tmp_path):
    FlashgauForCausalLM.from_language_model(build("flash"), pad_token_id=0).save_pretrained(tmp_path)
    assert not list(tmp_path.glob("*.py"))                       # a plain save names no code
    add_remote_code(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_flashgau.FlashgauForCausalLM"
    assert {p.name for p in tmp_path.glob("*.py")} == {"configuration_flashgau.py", "modeling_flashgau.py"}
    (tmp_path / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(ValueError, match="is not a flashgau model's config"):
        add_remote_code(tmp_path)
    with pytest.raises(ValueError, match="no config.json in"):
        add_remote_code(tmp_path / "nothing")


@pytest.mark.slow
def test_lm_eval_scores_an_exported_model_as_flashgau_does(exported, tmp_path):
    if importlib.util.find_spec("lm_eval") is None:
        pytest.skip("lm-evaluation-harness is not installed (pip install 'flashgau[eval]')")
    kind, run, out = exported
    if kind != "causal":
        pytest.skip("lm-eval's hf model scores causal language models; the masked export is not one")
    command = [sys.executable, "-m", "lm_eval", "run", "--model", "hf", "--model_args",
               f"pretrained={out},trust_remote_code=True,dtype=float32,prefix_token_id=0",
               "--tasks", "flashgau_shakespeare_cloze", "--include_path", str(TASKS), "--device", "cpu",
               "--batch_size", "8", "--output_path", str(tmp_path / "results"), "--log_samples"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=_fresh_env(tmp_path), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    [results] = glob.glob(str(tmp_path / "results" / "*" / "results_*.json"))
    [samples] = glob.glob(str(tmp_path / "results" / "*" / "samples_flashgau_shakespeare_cloze_*.jsonl"))
    acc = json.loads(Path(results).read_text())["results"]["flashgau_shakespeare_cloze"]["acc,none"]
    trained = load_trained(run)
    rows = [json.loads(line) for line in Path(samples).read_text().splitlines()]
    assert len(rows) == len((TASKS / "shakespeare_cloze.jsonl").read_text().splitlines())
    right = 0
    for row in rows:
        context, choices = row["doc"]["context"], row["doc"]["choices"]
        mine = [_log_likelihood(trained, context, " " + choice) for choice in choices]
        theirs = [float(resp[0]) for resp in row["filtered_resps"]]
        assert theirs == pytest.approx(mine, rel=1e-4, abs=1e-3)
        right += max(range(len(mine)), key=mine.__getitem__) == row["doc"]["label"]
    assert acc == pytest.approx(right / len(rows))


def _log_likelihood(trained, context: str, continuation: str) -> float:
    """log p(continuation | context) under flashgau's own model (the sum over the continuation's tokens)."""
    start = trained.tokenizer.encode(context)
    ids = torch.tensor([start + trained.tokenizer.encode(continuation)])
    with torch.no_grad():
        logp = trained.model(ids).logits.log_softmax(-1)[0, :-1]
    targets = ids[0, 1:]
    return logp[torch.arange(len(start) - 1, ids.shape[1] - 1), targets[len(start) - 1:]].sum().item()
