"""The whole app config: top-level keys, catalog/router/monitoring merged, names cross-checked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from core.config import TOP_LEVEL_KEYS, AppConfig, load_app_config
from core.config_loading import ConfigError


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "user.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_load_and_cross_check(tmp_path: Path) -> None:
    config = load_app_config(None, models_dir=tmp_path)
    assert isinstance(config, AppConfig)
    assert config.remote is None
    assert config.catalog.get("remote").enabled is False
    assert config.fallback_cascade  # from monitoring.yaml
    for name in config.fallback_cascade:
        assert name in config.catalog
    for _, name in config.router.named_models():
        assert name in config.catalog
    assert config.catalog.models_dir == tmp_path


def test_unknown_top_level_key(tmp_path: Path) -> None:
    path = write(tmp_path, {"modles": {}})
    with pytest.raises(ConfigError) as info:
        load_app_config(path)
    assert info.value.path == str(path)
    assert info.value.key == "modles"
    assert all(key in info.value.problem for key in TOP_LEVEL_KEYS)


def test_fallback_cascade_must_name_catalog_models(tmp_path: Path) -> None:
    path = write(tmp_path, {"model_switching": {
        "fallback_cascade": ["qwen3-14b", "qwen3-8b-base", "remote"]}})
    with pytest.raises(ConfigError) as info:
        load_app_config(path)
    assert info.value.path == str(path)
    assert info.value.key == "model_switching.fallback_cascade.1"
    assert "qwen3-8b-base" in info.value.problem
    assert "qwen3-8b" in info.value.problem


def test_user_models_router_and_cascade_work_together(tmp_path: Path) -> None:
    path = write(tmp_path, {
        "models": {"my-7b": {
            "display_name": "Mine", "quantization": "awq", "mode": "instruct",
            "priority": "CUSTOM", "engine": "vllm", "default_context": 8192,
            "architecture": {"layers": 28, "q_heads": 28, "kv_heads": 4, "head_dim": 128,
                             "hidden": 3584, "params_total": 7.6e9, "params_active": 7.6e9,
                             "tied_embeddings": False, "vocab": 152064,
                             "max_position": 32768}},
            "qwen3-8b": {"default_context": 4096}},
        "router": {"selection": {"hot": {"rules": [{"prefer": ["my-7b"]}]}}},
        "model_switching": {"fallback_cascade": ["qwen3-14b", "my-7b", "remote"]},
    })
    config = load_app_config(path, models_dir=tmp_path)
    assert config.catalog.get("my-7b").quantization == "awq"
    assert config.catalog.get("qwen3-8b").default_context == 4096
    assert [r.prefer for r in config.router.selection.hot.rules] == [("my-7b",)]
    assert config.router.selection.hot.above_temperature_c == 80  # the rest stays default
    assert config.fallback_cascade == ("qwen3-14b", "my-7b", "remote")
    assert str(path) in config.sources


def test_remote_section_enables_the_remote_entry(tmp_path: Path) -> None:
    path = write(tmp_path, {"remote": {"base_url": "http://gpu-box:8000/v1",
                                       "model": "qwen3-14b", "api_key_env": "GPU_BOX_KEY",
                                       "read_timeout_s": 30}})
    config = load_app_config(path)
    entry = config.catalog.get("remote")
    assert entry.enabled
    assert entry.base_url == "http://gpu-box:8000/v1"
    assert entry.remote_model == "qwen3-14b"
    assert config.remote is not None
    assert config.remote.api_key_env == "GPU_BOX_KEY"
    assert config.remote.read_timeout_s == 30  # the remote engine's own settings model


@pytest.mark.parametrize(("remote", "key"), [
    ({"base_url": "http://x"}, "remote.model"),
    ({"base_url": "http://x", "model": "m", "token": "secret"}, "remote.token"),
    ("http://x", "remote"),
])
def test_bad_remote_section(tmp_path: Path, remote: Any, key: str) -> None:
    path = write(tmp_path, {"remote": remote})
    with pytest.raises(ConfigError) as info:
        load_app_config(path)
    assert info.value.key == key
    assert info.value.path == str(path)


def test_errors_from_each_section_name_the_user_file(tmp_path: Path) -> None:
    path = write(tmp_path, {"router": {"selection": {"local_tier": ["nope"]}}})
    with pytest.raises(ConfigError) as info:
        load_app_config(path)
    assert (info.value.path, info.value.key) == (str(path), "router.selection.local_tier.0")
    path = write(tmp_path, {"models": {"qwen3-14b": {"engine": "ollama"}}})
    with pytest.raises(ConfigError) as info:
        load_app_config(path)
    assert (info.value.path, info.value.key) == (str(path), "models.qwen3-14b.engine")


def test_missing_user_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read file"):
        load_app_config(tmp_path / "absent.yaml")


def test_server_section_is_off_and_loopback_by_default(tmp_path: Path) -> None:
    server = load_app_config(None, models_dir=tmp_path).server
    assert server.enabled is False
    assert server.host == "127.0.0.1"
    path = write(tmp_path, {"server": {"enabled": True, "host": "0.0.0.0", "port": 9001,
                                       "api_key_env": "MY_KEY"}})
    server = load_app_config(path, models_dir=tmp_path).server
    assert (server.enabled, server.host, server.port, server.api_key_env) == (
        True, "0.0.0.0", 9001, "MY_KEY")


@pytest.mark.parametrize(("section", "key"), [
    ({"port": 70000}, "server.port"),
    ({"hots": "::1"}, "server.hots"),
    ("yes", "server"),
])
def test_bad_server_section_names_the_key(tmp_path: Path, section: object, key: str) -> None:
    path = write(tmp_path, {"server": section})
    with pytest.raises(ConfigError) as info:
        load_app_config(path, models_dir=tmp_path)
    assert info.value.path == str(path)
    assert info.value.key == key


# -- one setting each for the router and the manager: the memory buffer and the cascade ---------
def test_the_router_and_the_manager_share_the_buffer_and_the_cascade(tmp_path: Path) -> None:
    shipped = load_app_config(None, models_dir=tmp_path)
    assert shipped.router.selection.buffer_gib == \
        shipped.monitoring.model_switching.vram_buffer_gb
    assert shipped.router.selection.cascade == tuple(
        m for m in shipped.fallback_cascade if m != "remote")
    path = write(tmp_path, {"model_switching": {
        "vram_buffer_gb": 2.5, "fallback_cascade": ["qwen3-14b", "qwen3-8b", "remote"]}})
    config = load_app_config(path, models_dir=tmp_path)
    assert config.router.selection.buffer_gib == 2.5
    assert config.buffer_bytes == int(2.5 * 1024**3)
    assert config.router.selection.cascade == ("qwen3-14b", "qwen3-8b")
    assert config.warnings == ()


def test_the_router_keys_of_before_are_read_as_the_shared_ones_with_a_warning(
        tmp_path: Path) -> None:
    path = write(tmp_path, {"router": {"selection": {
        "buffer_gib": 2, "cascade": ["qwen3-14b", "qwen3-8b"], "use_remote": False}}})
    config = load_app_config(path, models_dir=tmp_path, log_warnings=False)
    switching = config.monitoring.model_switching
    assert switching.vram_buffer_gb == 2
    # The router's cascade never named the remote endpoint; the manager's ends with it.
    assert switching.fallback_cascade == ("qwen3-14b", "qwen3-8b", "remote")
    assert config.router.selection.cascade == ("qwen3-14b", "qwen3-8b")
    assert config.router.selection.buffer_gib == 2
    assert config.router.selection.use_remote is False  # the rest of the section stays
    (warning,) = config.warnings
    assert warning.startswith(f"{path}: read router.selection.buffer_gib as "
                              "model_switching.vram_buffer_gb; router.selection.cascade as "
                              "model_switching.fallback_cascade")


@pytest.mark.parametrize(("user", "key", "problem"), [
    ({"router": {"selection": {"buffer_gib": 2}}, "model_switching": {"vram_buffer_gb": 1}},
     "router.selection.buffer_gib", "given twice"),
    ({"router": {"selection": {"buffer_gib": -1}}}, "router.selection.buffer_gib",
     "greater than or equal to 0"),
    ({"router": {"selection": {"cascade": ["qwen3-14b", "qwen3-8b-base"]}}},
     "router.selection.cascade.1", "'qwen3-8b-base' is not in the catalog"),
])
def test_a_bad_router_key_of_before_is_named_as_written(
        tmp_path: Path, user: dict[str, Any], key: str, problem: str) -> None:
    path = write(tmp_path, user)
    with pytest.raises(ConfigError) as info:
        load_app_config(path, models_dir=tmp_path, log_warnings=False)
    assert info.value.path == str(path)
    assert info.value.key == key
    assert problem in info.value.problem
