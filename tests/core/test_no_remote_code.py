"""A model folder that ships its own code (``auto_map`` + a Python module) is refused: loading it never
runs that code, whatever the folder says."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sparsegrad_core.loading import load_base_model


def test_a_model_with_custom_code_is_refused_without_running_it(tmp_path: Path, tiny_model_dir: Path) -> None:
    marker = tmp_path / "code-ran"
    folder = tmp_path / "evil-model"
    folder.mkdir()
    for tokenizer_file in tiny_model_dir.glob("*"):  # a real tokenizer, so loading reaches the model code
        if "token" in tokenizer_file.name or tokenizer_file.name == "vocab.txt":
            shutil.copy(tokenizer_file, folder / tokenizer_file.name)
    (folder / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('pwned')\n"
        "from transformers import PretrainedConfig, PreTrainedModel\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
        "class EvilModel(PreTrainedModel):\n    config_class = EvilConfig\n"
    )
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil", "architectures": ["EvilModel"],
        "auto_map": {"AutoConfig": "evil.EvilConfig", "AutoModel": "evil.EvilModel",
                     "AutoModelForSequenceClassification": "evil.EvilModel"},
    }))
    with pytest.raises(ValueError, match="trust_remote_code"):
        load_base_model(folder, "classification", num_labels=2)
    assert not marker.exists(), "the model folder's code was executed"
