"""The code files an exported folder carries, so that transformers loads it by path alone
(`AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`, in a process that never imported flashgau).

transformers' convention for a model that lives outside it: config.json (and tokenizer_config.json) name, under
`auto_map`, a class in a code file of the folder; the Auto classes copy that file into their module cache and
import it. These files hold no model code: each class is a thin subclass of flashgau.hf's own, imported from the
installed flashgau package (an ImportError that says so when it is missing). Being classes of their own module,
they are what transformers registers on loading, so a model or tokenizer loaded by path and saved again copies its
code file along (transformers' custom_object_save); flashgau's own classes do the same through `copy_code_files`
when what they save names these files, so a folder keeps loading by path however it was loaded.

configuration_flashgau.py  FlashgauConfig
modeling_flashgau.py       FlashgauForCausalLM, FlashgauForMaskedLM (imports configuration_flashgau)
tokenization_flashgau.py   FlashgauByteTokenizer, FlashgauBPETokenizer
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Union

FOLDER = Path(__file__).resolve().parent
CODE_FILES = ("configuration_flashgau.py", "modeling_flashgau.py", "tokenization_flashgau.py")
_NEEDS = {"modeling_flashgau.py": ("configuration_flashgau.py",)}       # its relative import


def config_auto_map(causal: bool) -> dict[str, str]:
    """config.json's auto_map of a causal or a masked flashgau model."""
    model = ("AutoModelForCausalLM", "FlashgauForCausalLM") if causal else ("AutoModelForMaskedLM",
                                                                           "FlashgauForMaskedLM")
    return {"AutoConfig": "configuration_flashgau.FlashgauConfig", model[0]: f"modeling_flashgau.{model[1]}"}


def tokenizer_auto_map(tokenizer_class: str) -> dict[str, list]:
    """tokenizer_config.json's auto_map of FlashgauByteTokenizer or FlashgauBPETokenizer (the form transformers'
    save_pretrained writes: [class, None])."""
    return {"AutoTokenizer": [f"tokenization_flashgau.{tokenizer_class}", None]}


def copy_code_files(folder: Union[str, Path]) -> list[Path]:
    """Copy into `folder` the code files of this package that the auto_map of its config.json and
    tokenizer_config.json name (with the files they import); returns the files written. A folder whose JSON names
    none of them is left as it is."""
    folder = Path(folder)
    named: set[str] = set()
    for name in ("config.json", "tokenizer_config.json"):
        try:
            auto_map = json.loads((folder / name).read_text(encoding="utf-8")).get("auto_map") or {}
        except (OSError, ValueError, AttributeError):
            continue
        for refs in auto_map.values():
            for ref in refs if isinstance(refs, list) else [refs]:
                if isinstance(ref, str) and "--" not in ref and f"{ref.rpartition('.')[0]}.py" in CODE_FILES:
                    named.add(f"{ref.rpartition('.')[0]}.py")
    named |= {needed for name in named for needed in _NEEDS.get(name, ())}
    written = []
    for name in sorted(named):
        shutil.copyfile(FOLDER / name, folder / name)
        written.append(folder / name)
    return written
