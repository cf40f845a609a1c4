"""Is a local directory a model vLLM can load? One sentence naming what is missing or corrupt
(the `--model` check at launch and the engine's check before a load)."""

from __future__ import annotations

import json
from pathlib import Path

from core.engine.base import ModelDirectoryError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tiktoken.model")


def check_model_dir(path: Path | str) -> None:
    """Raise ModelDirectoryError naming what is missing or corrupt in a local model directory."""
    p = Path(path)
    if not p.is_dir():
        raise ModelDirectoryError(str(p), "the directory does not exist")
    config = p / "config.json"
    if not config.is_file():
        raise ModelDirectoryError(str(p), "config.json is missing")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelDirectoryError(str(p), f"config.json is corrupt ({exc})") from exc
    if not isinstance(data, dict) or not (data.get("architectures") or data.get("model_type")):
        raise ModelDirectoryError(str(p), "config.json names no architecture or model_type")
    weights = [*p.glob("*.safetensors"), *p.glob("*.bin"), *p.glob("*.pt"), *p.glob("*.gguf")]
    if not weights:
        raise ModelDirectoryError(str(p), "no weight files (*.safetensors or *.bin)")
    if not any(w.stat().st_size > 0 for w in weights):
        raise ModelDirectoryError(str(p), "the weight files are empty")
    if not any((p / name).is_file() for name in TOKENIZER_FILES):
        raise ModelDirectoryError(
            str(p), "no tokenizer files (tokenizer.json, tokenizer.model or vocab.json)")
