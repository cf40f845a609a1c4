"""The model catalog: shipped entries, lookups, on-disk state and user overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from core.config_loading import ConfigError
from core.models.catalog import Catalog, ModelEntry, UnknownModelError, load_catalog

QWEN = ("qwen3-4b-instruct-2507", "qwen3-4b-thinking-2507", "qwen3-8b", "qwen3-14b",
        "qwen3-30b-a3b-instruct-2507")


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return load_catalog(models_dir=tmp_path / "models")


def test_decision_record_entries(catalog: Catalog) -> None:
    assert set(QWEN) <= set(catalog.ids)
    expected = {
        "qwen3-4b-instruct-2507": ("fp16", "instruct", "FAST_GENERAL", "vllm"),
        "qwen3-4b-thinking-2507": ("fp8", "thinking", "REASONING", "vllm"),
        "qwen3-8b": ("awq", "base", "BALANCED", "vllm"),
        "qwen3-14b": ("awq", "base", "CAPABLE", "vllm"),
        "qwen3-30b-a3b-instruct-2507": ("awq", "instruct", "MAXIMUM", "vllm"),
    }
    for model_id, (quant, mode, priority, engine) in expected.items():
        e = catalog.get(model_id)
        assert (e.quantization, e.mode, e.priority, e.engine) == (quant, mode, priority, engine)
        assert e.trust_remote_code is False
        assert e.architecture is not None
        assert e.architecture.vocab == 151936
    assert catalog.get("qwen3-4b-instruct-2507").expected_tokens_per_s == (300, 350)


def test_reasoning_model_is_a_checkpoint_vllm_loads(catalog: Catalog) -> None:
    """The record's REASONING role: Qwen's FP8 checkpoint, passed to vLLM as such (not a GGUF)."""
    entry = catalog.get("qwen3-4b-thinking-2507")
    assert entry.hf_repo == "Qwen/Qwen3-4B-Thinking-2507-FP8"
    assert not entry.is_gguf
    assert entry.vllm_quantization == "fp8"
    assert entry.vllm_dtype == "auto"  # the checkpoint's own bfloat16 for what is not FP8


def test_architecture_matches_facts(catalog: Catalog) -> None:
    shapes = {  # layers, q heads, kv heads, head_dim, hidden (FACTS.md table)
        "qwen3-4b-instruct-2507": (36, 32, 8, 128, 2560),
        "qwen3-8b": (36, 32, 8, 128, 4096),
        "qwen3-14b": (40, 40, 8, 128, 5120),
        "qwen3-30b-a3b-instruct-2507": (48, 32, 4, 128, 2048),
    }
    for model_id, shape in shapes.items():
        a = catalog.get(model_id).architecture
        assert a is not None
        assert (a.layers, a.q_heads, a.kv_heads, a.head_dim, a.hidden) == shape
    moe = catalog.get("qwen3-30b-a3b-instruct-2507").architecture
    assert moe is not None
    assert moe.params_active == pytest.approx(3.3e9)
    assert catalog.get("qwen3-4b-instruct-2507").architecture.tied_embeddings  # type: ignore[union-attr]


def test_demo_and_remote_entries(catalog: Catalog) -> None:
    for model_id in ("demo-tiny-a", "demo-tiny-b"):
        a = catalog.get(model_id).architecture
        assert a is not None
        assert (a.layers, a.hidden, a.q_heads, a.kv_heads, a.head_dim, a.vocab) == \
            (2, 128, 2, 1, 64, 512)
    remote = catalog.get("remote")
    assert remote.engine == "remote"
    assert remote.enabled is False
    assert remote.base_url is None


def test_unknown_model_lists_known_ids(catalog: Catalog) -> None:
    with pytest.raises(UnknownModelError) as info:
        catalog.get("qwen3-8b-base")  # the record's selector returned this missing name
    assert isinstance(info.value, KeyError)
    message = str(info.value)
    assert "qwen3-8b-base" in message
    assert "qwen3-14b" in message
    assert "demo-tiny-a" in message


def test_local_path_and_on_disk(catalog: Catalog, tmp_path: Path) -> None:
    entry = catalog.get("demo-tiny-a")
    assert catalog.local_path(entry) == tmp_path / "models" / "demo-tiny-a"
    assert not catalog.is_on_disk(entry)
    catalog.local_path(entry).mkdir(parents=True)
    assert not catalog.is_on_disk(entry)  # a directory without config.json is not a model
    (catalog.local_path(entry) / "config.json").write_text("{}")
    assert catalog.is_on_disk(entry)
    assert not catalog.is_on_disk(catalog.get("remote"))


def test_default_models_dir_follows_data_dir(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VRAMPILOT_DATA_DIR", str(tmp_path / "data"))
    catalog = load_catalog()
    assert catalog.local_path(catalog.get("qwen3-8b")) == tmp_path / "data" / "models" / "qwen3-8b"


def test_explicit_path_and_gguf_on_disk(catalog: Catalog, tmp_path: Path) -> None:
    gguf = tmp_path / "thinking.gguf"
    entry = catalog.get("qwen3-4b-thinking-2507").model_copy(update={
        "path": gguf, "quantization": "q5_k_m", "engine": "llama.cpp"})
    assert catalog.local_path(entry) == gguf
    assert not catalog.is_on_disk(entry)
    gguf.write_bytes(b"GGUF")
    assert catalog.is_on_disk(entry)


def test_user_overrides_merge_by_id(tmp_path: Path) -> None:
    user = {
        "qwen3-14b": {"default_context": 8192, "trust_remote_code": True},
        "my-model": {
            "display_name": "Mine", "quantization": "bf16", "mode": "instruct",
            "priority": "CUSTOM", "engine": "vllm", "default_context": 4096,
            "path": str(tmp_path / "mine"),
            "architecture": {"layers": 2, "q_heads": 2, "kv_heads": 1, "head_dim": 64,
                             "hidden": 128, "params_total": 1e6, "params_active": 1e6,
                             "tied_embeddings": True, "vocab": 512, "max_position": 2048},
        },
    }
    catalog = load_catalog(user, tmp_path / "user.yaml")
    e = catalog.get("qwen3-14b")
    assert e.default_context == 8192
    assert e.trust_remote_code is True
    assert e.quantization == "awq"  # untouched fields keep their defaults
    assert catalog.get("my-model").path == tmp_path / "mine"
    assert catalog.ids[-1] == "my-model"


def test_new_entry_missing_field_names_user_file(tmp_path: Path) -> None:
    user = {"half": {"display_name": "Half", "quantization": "bf16", "mode": "instruct",
                     "priority": "X", "engine": "vllm"}}
    with pytest.raises(ConfigError) as info:
        load_catalog(user, tmp_path / "user.yaml")
    assert info.value.path == str(tmp_path / "user.yaml")
    assert info.value.key == "models.half"
    assert "architecture" in info.value.problem


def test_bad_override_names_file_and_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_catalog({"qwen3-8b": {"quantization": "int3"}}, tmp_path / "u.yaml")
    assert info.value.path == str(tmp_path / "u.yaml")
    assert info.value.key == "models.qwen3-8b.quantization"
    with pytest.raises(ConfigError) as info:
        load_catalog({"qwen3-8b": {"colour": "blue"}}, tmp_path / "u.yaml")
    assert info.value.key == "models.qwen3-8b.colour"
    assert info.value.problem == "unknown key"


def test_gguf_for_vllm_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_catalog({"qwen3-4b-thinking-2507": {"quantization": "q5_k_m"}},
                     tmp_path / "u.yaml")
    assert "GGUF" in info.value.problem
    assert "llama.cpp" in info.value.problem


def test_defaults_file_errors_name_defaults(tmp_path: Path) -> None:
    broken = tmp_path / "models.yaml"
    broken.write_text(yaml.safe_dump({"models": {"x": {"display_name": "X"}}}))
    with pytest.raises(ConfigError) as info:
        load_catalog(defaults_path=broken)
    assert info.value.path == str(broken)
    assert info.value.key.startswith("models.x")
    broken.write_text("models: [1, 2]\n")
    with pytest.raises(ConfigError, match="models"):
        load_catalog(defaults_path=broken)


def test_entries_are_frozen(catalog: Catalog) -> None:
    entry = catalog.get("qwen3-8b")
    with pytest.raises(ValueError, match="frozen"):
        entry.engine = "remote"  # type: ignore[misc]
    assert isinstance(entry, ModelEntry)
    assert entry.vllm_quantization == "awq"
    assert catalog.get("qwen3-4b-instruct-2507").vllm_dtype == "float16"
    assert catalog.get("qwen3-4b-instruct-2507").vllm_quantization is None
