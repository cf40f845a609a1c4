"""vLLM's failure messages (from real vLLM 0.32 CPU runs and its GPU source) -> typed errors."""

from __future__ import annotations

import pytest

from core.engine.base import (
    ContextTooLongError,
    InsufficientMemoryError,
    ModelDirectoryError,
    NoCacheMemoryError,
    UnsupportedModelError,
)
from core.engine.errors import map_vllm_error, parse_vllm_message

# Observed on this machine with gpu_memory_utilization=0.99 (raised in the worker process).
CPU_STARTUP = (
    "ValueError: Available memory on node 0 (9.11/10.46 GiB) on startup is less than desired CPU "
    "memory utilization (0.99, 10.36 GiB). On the CPU backend, the `--gpu-memory-utilization` "
    "flag controls the fraction of CPU memory reserved (despite its name). To resolve: decrease "
    "`--gpu-memory-utilization` (e.g. `--gpu-memory-utilization 0.5`) or reduce CPU memory used "
    "by other processes.")
# vllm/v1/worker/utils.py (GPU build), same release.
GPU_STARTUP = (
    "Free memory on device cuda:0 (1.23/15.57 GiB) on startup is less than desired GPU memory "
    "utilization (0.9, 14.01 GiB). Decrease GPU memory utilization or reduce GPU memory used by "
    "other processes.")
# Observed with max_model_len=4096 and kv_cache_memory_bytes=1 MiB.
MAX_LEN = (
    "ValueError: To serve at least one request with the model's max seq len (4096), (0.0 GiB KV "
    "cache is needed, which is larger than the available KV cache memory (0.0 GiB). Based on the "
    "available memory, the estimated maximum model length is 896. Try increasing "
    "`gpu_memory_utilization` (which also controls CPU memory on the CPU backend) or decreasing "
    "`max_model_len` when initializing the engine.")
# Observed with kv_cache_memory_bytes=0.
NO_CACHE = (
    "ValueError: No available memory for the cache blocks. Try increasing "
    "`gpu_memory_utilization` when initializing the engine (this flag also controls CPU memory "
    "reservation on the CPU backend, despite its name).")
# What the parent process sees for all of the above.
PARENT = ("Engine core initialization failed. See root cause above. "
          "Failed core proc(s): {'EngineCore': 1}")


def test_cpu_startup_memory() -> None:
    err = parse_vllm_message(CPU_STARTUP)
    assert isinstance(err, InsufficientMemoryError)
    assert (err.free_gib, err.total_gib, err.requested) == (9.11, 10.46, 0.99)
    assert str(err).startswith("Not enough free memory to load the model: 9.11 of 10.46 GiB free")


def test_gpu_startup_memory_and_older_spelling() -> None:
    for text in (GPU_STARTUP, GPU_STARTUP.replace("startup", "start-up")):
        err = parse_vllm_message(text)
        assert isinstance(err, InsufficientMemoryError)
        assert (err.free_gib, err.total_gib, err.requested) == (1.23, 15.57, 0.9)


def test_cpu_kv_allocation_memory() -> None:
    text = ("Available memory on node 0 (0.50/7.84 GiB) on kv cache allocation is less than "
            "requested memory for kv (-0.20/0.78 GiB). Reduce CPU memory used by other processes.")
    err = parse_vllm_message(text)
    assert isinstance(err, InsufficientMemoryError)
    assert (err.free_gib, err.total_gib) == (0.5, 7.84)


def test_max_model_len_that_fits() -> None:
    err = parse_vllm_message(MAX_LEN)
    assert isinstance(err, ContextTooLongError)
    assert (err.requested, err.max_fitting) == (4096, 896)
    assert "at most 896" in str(err)


def test_no_cache_memory() -> None:
    assert isinstance(parse_vllm_message(NO_CACHE), NoCacheMemoryError)


def test_unsupported_architecture() -> None:
    # Observed with architectures=["FancyForCausalLM"] in config.json (a pydantic error).
    text = ("1 validation error for ModelConfig\n  Value error, Model architectures "
            "['FancyForCausalLM'] are not supported for now. Supported architectures: "
            "dict_keys(['AfmoeForCausalLM', 'ApertusForCausalLM'])")
    err = parse_vllm_message(text)
    assert isinstance(err, UnsupportedModelError)
    assert str(err) == ("vLLM cannot run this model: Model architectures ['FancyForCausalLM'] "
                        "are not supported.")


def test_unknown_quantization() -> None:
    # Observed with quantization="awq-nonsense" (inside a pydantic ValidationError).
    text = ("1 validation error for ModelConfig\n  Value error, Unknown quantization method: "
            "awq-nonsense. Must be one of ['awq', 'auto_awq', 'fp8']. [type=value_error, "
            "input_value=ArgsKwargs((), {'model': ...})]")
    err = parse_vllm_message(text)
    assert isinstance(err, UnsupportedModelError)
    assert str(err) == ("vLLM cannot load this quantization: Unknown quantization method: "
                        "awq-nonsense.")


def test_unknown_messages_are_not_guessed() -> None:
    assert parse_vllm_message(PARENT) is None
    assert parse_vllm_message("") is None


def test_chain_and_log_are_searched() -> None:
    outer = RuntimeError(PARENT)
    outer.__cause__ = ValueError(NO_CACHE)
    assert isinstance(map_vllm_error(outer), NoCacheMemoryError)
    log_text = f"(EngineCore pid=1) ERROR 11-27 18:18:32 [core.py:1510] {MAX_LEN}\n"
    err = map_vllm_error(RuntimeError(PARENT), log_text)
    assert isinstance(err, ContextTooLongError)
    assert err.max_fitting == 896
    assert map_vllm_error(RuntimeError(PARENT), "nothing useful") is None


def test_typed_errors_pass_through() -> None:
    original = ModelDirectoryError("/m", "config.json is missing")
    assert map_vllm_error(RuntimeError("x")) is None
    wrapped = RuntimeError("wrapped")
    wrapped.__cause__ = original
    assert map_vllm_error(wrapped) is original


@pytest.mark.parametrize("text", [CPU_STARTUP, GPU_STARTUP, MAX_LEN, NO_CACHE])
def test_each_message_is_one_sentence(text: str) -> None:
    err = parse_vllm_message(text)
    assert err is not None
    assert "\n" not in str(err)
    assert str(err).endswith(".")
