"""The VRAM estimator against FACTS.md's Qwen3 table and a 16 GB RTX 4090 Laptop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.models.catalog import Catalog, load_catalog
from core.models.estimator import (
    GIB,
    Estimator,
    estimate,
    fit_context,
    footprint,
    kv_bytes_per_token,
    max_context,
    utilization_for,
    weight_bytes,
)

KIB = 1024
CARD = 16 * GIB  # RTX 4090 Laptop: 16 GB GDDR6
BUFFER = GIB  # the record's 1 GB safety buffer


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    return load_catalog(models_dir=tmp_path_factory.mktemp("models"))


@pytest.mark.parametrize(("model_id", "kib"), [
    ("qwen3-4b-instruct-2507", 144), ("qwen3-8b", 144), ("qwen3-14b", 160),
    ("qwen3-30b-a3b-instruct-2507", 96),
])
def test_kv_cache_per_token_matches_facts(catalog: Catalog, model_id: str, kib: int) -> None:
    arch = catalog.get(model_id).architecture
    assert arch is not None
    assert kv_bytes_per_token(arch, 2) == kib * KIB
    assert footprint(catalog.get(model_id)).kv_bytes_per_token == kib * KIB


def test_full_4b_context_does_not_fit_16gb(catalog: Catalog) -> None:
    entry = catalog.get("qwen3-4b-instruct-2507")
    est = estimate(entry, 262_144, CARD, CARD, BUFFER)
    assert est.kv_bytes == 36 * GIB  # FACTS: 36 GiB of BF16 KV cache
    assert not est.fits
    assert est.gpu_memory_utilization is None
    assert "262144 tokens" in est.reason
    assert "at most" in est.reason
    assert not estimate(entry, 131_072, CARD, CARD, BUFFER).fits  # the record's other context
    # Fitted to the device instead: a real context, well below the model's maximum.
    assert 16_384 < est.max_context < 131_072
    assert estimate(entry, est.max_context, CARD, CARD, BUFFER).fits


def test_8b_in_bf16_does_not_fit_16gb(catalog: Catalog) -> None:
    entry = catalog.get("qwen3-8b").model_copy(update={"quantization": "bf16"})
    est = estimate(entry, 4096, CARD, CARD, BUFFER)
    assert est.weight_bytes == pytest.approx(16.4e9, rel=0.01)  # FACTS: ~16.4 GB
    assert not est.fits
    assert "alone exceed" in est.reason
    assert est.max_context == 0
    assert max_context(entry, CARD, CARD, 0) == 0  # not even without the buffer


def test_30b_a3b_at_4bit_does_not_fit(catalog: Catalog) -> None:
    entry = catalog.get("qwen3-30b-a3b-instruct-2507")
    est = estimate(entry, 2048, CARD, CARD, BUFFER)
    assert 15.5e9 < est.weight_bytes < 17.5e9  # FACTS: ~16 GB of weights
    assert not est.fits
    assert est.max_context == 0
    assert max_context(entry, CARD, CARD, 0) == 0


def test_14b_awq_fits_with_moderate_context(catalog: Catalog) -> None:
    entry = catalog.get("qwen3-14b")
    best = max_context(entry, CARD, CARD, BUFFER)
    assert 8_192 <= best < 40_960
    est = estimate(entry, 16_384, CARD, CARD, BUFFER)
    assert est.fits
    assert est.gpu_memory_utilization is not None
    assert 0.6 < est.gpu_memory_utilization < 0.95


def test_weights_by_quantization(catalog: Catalog) -> None:
    arch4 = catalog.get("qwen3-4b-instruct-2507").architecture
    arch8 = catalog.get("qwen3-8b").architecture
    assert arch4 is not None
    assert arch8 is not None
    assert weight_bytes(arch4, "fp16") == weight_bytes(arch4, "bf16") == pytest.approx(8.04e9)
    assert weight_bytes(arch4, "fp32") == 2 * weight_bytes(arch4, "bf16")
    assert weight_bytes(arch4, "q5_k_m") == pytest.approx(4.02e9 * 5.5 / 8)
    assert weight_bytes(arch4, "q4_k_m") == pytest.approx(4.02e9 * 4.85 / 8)
    # AWQ: 4 bits + a 16-bit scale and 4-bit zero per 128 weights; embeddings and lm_head 16-bit.
    embeddings = 2 * 151936 * 4096
    expected = (8.19e9 - embeddings) * (4 + 20 / 128) / 8 + embeddings * 2
    assert weight_bytes(arch8, "awq") == pytest.approx(expected, rel=1e-9)
    assert weight_bytes(arch8, "awq") == pytest.approx(6.0e9, rel=0.05)  # the record's 6.0 GB
    effective_bits = weight_bytes(arch8, "awq") * 8 / arch8.params_total
    assert 4.25 < effective_bits < 6.5
    # FP8 (block 128 x 128, one float32 scale per block); the tied embeddings stay 16-bit.
    embeddings4 = 151936 * 2560
    expected4 = (4.02e9 - embeddings4) * (1 + 4 / 128**2) + embeddings4 * 2
    assert weight_bytes(arch4, "fp8") == pytest.approx(expected4, rel=1e-9)
    assert weight_bytes(arch4, "fp8") == pytest.approx(4.5e9, rel=0.05)  # the record's 4.5 GB
    with pytest.raises(ValueError, match="int3"):
        weight_bytes(arch8, "int3")


def test_utilization_is_a_fraction_of_total(catalog: Catalog) -> None:
    entry = catalog.get("qwen3-8b")
    free = 12 * GIB  # another process holds 4 GiB
    est = estimate(entry, 8192, CARD, free, BUFFER)
    assert est.fits
    assert est.gpu_memory_utilization is not None
    reserved = est.gpu_memory_utilization * CARD
    assert est.total_bytes <= reserved <= free - BUFFER
    assert est.gpu_memory_utilization - est.total_bytes / CARD < 0.001
    assert utilization_for(CARD // 2, CARD) == 0.5
    assert utilization_for(CARD // 2 + 1, CARD) == 0.501


def test_free_memory_held_elsewhere_shrinks_the_context(catalog: Catalog) -> None:
    entry = catalog.get("qwen3-4b-instruct-2507")
    roomy = max_context(entry, CARD, CARD, BUFFER)
    crowded = max_context(entry, CARD, 10 * GIB, BUFFER)
    assert 0 < crowded < roomy
    assert max_context(entry, CARD, 8 * GIB, BUFFER) == 0  # 7.5 GiB weights + overhead > 7 GiB


def test_negative_context_is_refused(catalog: Catalog) -> None:
    with pytest.raises(ValueError, match="non-negative number of tokens, got -1"):
        estimate(catalog.get("qwen3-8b"), -1, CARD, CARD, BUFFER)
    with pytest.raises(ValueError, match="non-negative"):
        fit_context(catalog.get("qwen3-8b"), CARD, CARD, BUFFER, wanted=-5)


def test_context_beyond_model_maximum(catalog: Catalog) -> None:
    est = estimate(catalog.get("demo-tiny-a"), 5000, CARD, CARD, BUFFER)
    assert not est.fits
    assert "maximum of 4096" in est.reason
    assert est.max_context == 4096


def test_remote_has_no_footprint(catalog: Catalog) -> None:
    with pytest.raises(ValueError, match="remote"):
        estimate(catalog.get("remote"), 10, CARD, CARD, BUFFER)


def test_fit_context_gives_what_the_manager_loads(catalog: Catalog) -> None:
    entry = catalog.get("qwen3-4b-instruct-2507")
    est = fit_context(entry, CARD, CARD, BUFFER)
    assert est.fits
    assert est.context_tokens == entry.default_context == 32_768
    tight = fit_context(entry, CARD, 11 * GIB, BUFFER)
    assert tight.fits
    assert tight.context_tokens == tight.max_context < 32_768


@settings(max_examples=200, deadline=None)
@given(free_gib=st.floats(0, 16), buffer_gib=st.floats(0, 2),
       model=st.sampled_from(["qwen3-4b-instruct-2507", "qwen3-8b", "qwen3-14b"]))
def test_max_context_is_the_largest_that_fits(catalog: Catalog, free_gib: float,
                                              buffer_gib: float, model: str) -> None:
    entry = catalog.get(model)
    free, buffer = int(free_gib * GIB), int(buffer_gib * GIB)
    best = max_context(entry, CARD, free, buffer)
    if best > 0:
        est = estimate(entry, best, CARD, free, buffer)
        assert est.fits
        assert est.gpu_memory_utilization is not None
        assert est.gpu_memory_utilization * CARD <= free - buffer
    if 0 < best < footprint(entry).max_position:
        assert not estimate(entry, best + 1, CARD, free, buffer).fits
    if best == 0:
        assert not estimate(entry, 1, CARD, free, buffer).fits


def test_reads_config_json_of_the_real_demo_model(catalog: Catalog, demo_model_dir: Path) -> None:
    entry = catalog.get("demo-tiny-a")
    fp = footprint(entry, demo_model_dir)
    assert fp.source.startswith("config.json")
    assert fp.kv_bytes_per_token == 2 * 2 * 1 * 64 * 2
    on_disk = sum(p.stat().st_size for p in demo_model_dir.glob("*.safetensors"))
    # fp32 weights: the parameter count from config.json matches the file (header aside).
    assert fp.weight_bytes == pytest.approx(on_disk, rel=0.02)
    cfg = json.loads((demo_model_dir / "config.json").read_text())
    assert fp.max_position == cfg["max_position_embeddings"]


def test_config_json_overrides_catalog(catalog: Catalog, tmp_path: Path) -> None:
    directory = tmp_path / "models" / "qwen3-14b"
    directory.mkdir(parents=True)
    cfg = {"architectures": ["Qwen3ForCausalLM"], "hidden_size": 5120, "num_hidden_layers": 40,
           "num_attention_heads": 40, "num_key_value_heads": 8, "head_dim": 128,
           "intermediate_size": 17408, "vocab_size": 151936, "tie_word_embeddings": False,
           "max_position_embeddings": 40960,
           "quantization_config": {"quant_method": "awq", "bits": 4, "group_size": 128}}
    (directory / "config.json").write_text(json.dumps(cfg))
    entry = catalog.get("qwen3-14b")
    fp = footprint(entry, directory)
    assert fp.architecture.params_total == pytest.approx(14.8e9, rel=0.01)  # counted from it
    assert fp.weight_bytes == pytest.approx(footprint(entry).weight_bytes, rel=0.01)
    # A different group size in the file changes the estimate: it is really read.
    cfg["quantization_config"]["group_size"] = 32  # type: ignore[index]
    (directory / "config.json").write_text(json.dumps(cfg))
    assert footprint(entry, directory).weight_bytes > fp.weight_bytes * 1.05
    # The Estimator finds the directory through the catalog and notices the change.
    est = Estimator(Catalog(catalog.entries, tmp_path / "models"))
    assert est.footprint(entry).source.startswith("config.json")


def test_device_agnostic_host_memory(catalog: Catalog) -> None:
    host_total = int(7.84 * GIB)  # what vLLM's CPU build saw on NUMA node 0 (FACTS.md)
    est = fit_context(catalog.get("demo-tiny-a"), host_total, host_total, BUFFER)
    assert est.fits
    assert est.gpu_memory_utilization is not None
    assert est.gpu_memory_utilization < 0.92  # the default that failed at start-up there


def test_cpu_engine_reserves_its_worker_rss(catalog: Catalog) -> None:
    """vLLM's CPU worker gives the KV cache utilization x memory minus its own RSS (~0.8 GiB)."""
    from core.models.estimator import EstimatorSettings

    host_total = int(7.84 * GIB)
    entry = catalog.get("demo-tiny-a")
    cpu = fit_context(entry, host_total, host_total, BUFFER,
                      settings=EstimatorSettings.for_cpu_engine())
    gpu = fit_context(entry, host_total, host_total, BUFFER)
    assert cpu.gpu_memory_utilization is not None
    assert gpu.gpu_memory_utilization is not None
    assert cpu.gpu_memory_utilization * host_total > GIB  # room for the worker's RSS
    assert cpu.gpu_memory_utilization > gpu.gpu_memory_utilization


def test_fp8_thinking_model_fits_the_records_low_memory_band(catalog: Catalog) -> None:
    """The record routes to the 4B thinking model below 8 GiB free: its FP8 checkpoint fits there
    with a useful context; the BF16 4B (8 GB of weights) does not fit at all."""
    low = int(7.9 * GIB)
    thinking = fit_context(catalog.get("qwen3-4b-thinking-2507"), CARD, low, BUFFER)
    assert thinking.fits
    assert thinking.context_tokens >= 8192
    assert thinking.weight_bytes < 4.6e9
    assert not fit_context(catalog.get("qwen3-4b-instruct-2507"), CARD, low, BUFFER).fits


def test_fp8_quantization_config_is_read(catalog: Catalog, tmp_path: Path) -> None:
    """A BF16-declared entry whose directory holds an FP8 checkpoint is sized as FP8."""
    directory = tmp_path / "thinking"
    directory.mkdir()
    cfg = {"hidden_size": 2560, "num_hidden_layers": 36, "num_attention_heads": 32,
           "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 9728,
           "vocab_size": 151936, "tie_word_embeddings": True, "max_position_embeddings": 262144,
           "torch_dtype": "bfloat16",
           "quantization_config": {"quant_method": "fp8", "fmt": "e4m3",
                                   "activation_scheme": "dynamic",
                                   "weight_block_size": [128, 128]}}
    (directory / "config.json").write_text(json.dumps(cfg))
    entry = catalog.get("qwen3-4b-thinking-2507").model_copy(update={"quantization": "bf16"})
    fp = footprint(entry, directory)
    assert fp.weight_bytes == pytest.approx(weight_bytes(fp.architecture, "fp8"))
    assert fp.weight_bytes < 0.6 * weight_bytes(fp.architecture, "bf16")


def test_an_fp8_kv_cache_halves_the_bytes_per_token(catalog: Catalog) -> None:
    from core.models.estimator import EstimatorSettings

    entry = catalog.get("qwen3-8b")
    default = footprint(entry, None)
    fp8 = footprint(entry, None, EstimatorSettings(kv_dtype_bytes=1))
    assert fp8.kv_bytes_per_token * 2 == default.kv_bytes_per_token == 144 * KIB
