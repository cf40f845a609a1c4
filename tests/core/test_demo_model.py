"""The tiny demo model: deterministic, loadable by transformers, and checked before vLLM sees it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.engine.base import ModelDirectoryError
from core.engine.demo_model import (
    MARKER_FILE,
    VOCAB_SIZE,
    build_demo_model,
    ensure_demo_models,
)
from core.engine.model_dir import check_model_dir


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_same_seed_gives_same_bytes(demo_model_dir: Path, tmp_path: Path) -> None:
    again = build_demo_model(tmp_path / "again", seed=0, name="demo-tiny-a")
    assert _files(again) == _files(demo_model_dir)


def test_other_seed_gives_other_weights(demo_model_dir: Path, tmp_path: Path) -> None:
    other = build_demo_model(tmp_path / "other", seed=1)
    a, b = _files(demo_model_dir), _files(other)
    assert a["model.safetensors"] != b["model.safetensors"]
    assert a["tokenizer.json"] == b["tokenizer.json"]


def test_model_and_tokenizer_load_and_agree(demo_model_dir: Path) -> None:
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(demo_model_dir)
    tok = AutoTokenizer.from_pretrained(demo_model_dir)
    assert config.architectures == ["Qwen3ForCausalLM"]
    assert (config.num_hidden_layers, config.hidden_size, config.head_dim) == (2, 128, 64)
    assert (config.num_attention_heads, config.num_key_value_heads) == (2, 1)
    assert config.vocab_size == len(tok) == VOCAB_SIZE
    assert config.tie_word_embeddings
    assert tok.eos_token == "<|im_end|>"
    assert config.eos_token_id == tok.eos_token_id
    assert tok.pad_token == "<|endoftext|>"


def test_chat_template_is_qwen3_style(demo_model_dir: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(demo_model_dir)
    msgs = [{"role": "user", "content": "hi"}]
    off = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True,
                                  enable_thinking=False)
    on = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True,
                                 enable_thinking=True)
    assert off == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    assert on == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    history = [*msgs, {"role": "assistant", "content": "<think>\nwhy\n</think>\n\nanswer"}]
    assert "why" not in tok.apply_chat_template(history, tokenize=False)
    # The think tags are single tokens that survive skip_special_tokens, like Qwen3's.
    ids = tok("<think>x</think>").input_ids
    assert ids[0] == tok.convert_tokens_to_ids("<think>")
    assert tok.decode(ids, skip_special_tokens=True) == "<think>x</think>"


def test_ensure_builds_once(tmp_path: Path) -> None:
    built = ensure_demo_models(tmp_path)
    assert [p.name for p in built] == ["demo-small", "demo-tiny-a", "demo-tiny-b"]
    stamps = [p.joinpath("model.safetensors").stat().st_mtime_ns for p in built]
    assert ensure_demo_models(tmp_path) == built
    assert [p.joinpath("model.safetensors").stat().st_mtime_ns for p in built] == stamps
    # A damaged model is rebuilt; its marker records the seed.
    (built[2] / "config.json").write_text("{not json")
    ensure_demo_models(tmp_path)
    json.loads((built[2] / "config.json").read_text())
    assert json.loads((built[2] / MARKER_FILE).read_text())["seed"] == 1
    # demo-small is larger (so an alert can step down from it), still head_dim 64.
    small = json.loads((built[0] / "config.json").read_text())
    tiny = json.loads((built[1] / "config.json").read_text())
    assert small["hidden_size"] > tiny["hidden_size"]
    assert small["num_hidden_layers"] > tiny["num_hidden_layers"]
    assert small["head_dim"] == tiny["head_dim"] == 64
    sizes = [p.joinpath("model.safetensors").stat().st_size for p in built]
    assert sizes[0] > 3 * sizes[1]


def test_ensure_defaults_to_models_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       demo_model_dir: Path) -> None:
    monkeypatch.setenv("VRAMPILOT_DATA_DIR", str(tmp_path))
    # Pre-seed one so the test builds only the others.
    shutil.copytree(demo_model_dir, tmp_path / "models" / "demo-tiny-a")
    built = ensure_demo_models()
    models = tmp_path / "models"
    assert built == [models / "demo-small", models / "demo-tiny-a", models / "demo-tiny-b"]
    check_model_dir(built[2])


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        (lambda p: shutil.rmtree(p), "does not exist"),
        (lambda p: (p / "config.json").unlink(), "config.json is missing"),
        (lambda p: (p / "config.json").write_text("{\"a\": "), "config.json is corrupt"),
        (lambda p: (p / "config.json").write_text("{}"), "no architecture"),
        (lambda p: (p / "model.safetensors").unlink(), "no weight files"),
        (lambda p: (p / "model.safetensors").write_bytes(b""), "weight files are empty"),
        (lambda p: (p / "tokenizer.json").unlink(), "no tokenizer files"),
    ],
)
def test_check_model_dir_names_the_problem(demo_model_dir: Path, tmp_path: Path,
                                           damage: object, expected: str) -> None:
    target = tmp_path / "m"
    shutil.copytree(demo_model_dir, target)
    check_model_dir(target)
    damage(target)  # type: ignore[operator]
    with pytest.raises(ModelDirectoryError, match=expected) as info:
        check_model_dir(target)
    assert info.value.path == str(target)


def test_cli_builds_into_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from core.cli import main

    assert main(["build-demo", "--path", str(tmp_path / "x"), "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "x")
    assert json.loads((tmp_path / "x" / MARKER_FILE).read_text())["seed"] == 3
