"""The estimator's figures pinned: engine overhead, weight sizes per quantization, the limits of
the fit (exactly at the usable memory, one byte over), config.json reading and the estimate's
report (`vrampilot estimate` prints `reason` and `as_dict`).

Figures from the module's documented model and FACTS.md's Qwen3 table; the catalog is the real
resources/models.yaml.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from core.models.catalog import Architecture, Catalog, load_catalog
from core.models.estimator import (
    GIB,
    Estimator,
    EstimatorSettings,
    Footprint,
    architecture_from_config,
    estimate,
    estimate_footprint,
    fit_context,
    fit_footprint,
    fmt_bytes,
    footprint,
    kv_bytes_per_token,
    max_context,
    max_context_for,
    overhead_bytes,
    read_config_json,
    utilization_for,
    weight_bytes,
)

MIB = 1024**2
CARD = 16 * GIB
BUFFER = GIB

# Qwen3-14B's config.json (the Qwen/Qwen3-14B repository), the sizes the estimator reads.
QWEN3_14B = {"hidden_size": 5120, "num_hidden_layers": 40, "num_attention_heads": 40,
             "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 17408,
             "vocab_size": 151936, "tie_word_embeddings": False,
             "max_position_embeddings": 40960}


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    return load_catalog(models_dir=tmp_path_factory.mktemp("models"))


def arch(**changes: object) -> Architecture:
    """A small dense model (tied embeddings), changed where the test says."""
    base: dict[str, object] = dict(layers=4, q_heads=8, kv_heads=2, head_dim=64, hidden=512,
                                   vocab=1000, tied_embeddings=True, params_total=20e6,
                                   params_active=20e6, max_position=8192, intermediate=1024)
    base.update(changes)
    return Architecture.model_validate(base)


def fp(weights: int, overhead: int, kv_per_token: int, max_position: int = 100_000) -> Footprint:
    return Footprint(model_id="m", weight_bytes=weights, kv_bytes_per_token=kv_per_token,
                     overhead_bytes=overhead, max_position=max_position, architecture=arch(),
                     source="catalog")


# -- engine overhead: 0.75 GiB + one prefill chunk's activations + fp32 logits for 256 seqs -------
def test_overhead_of_the_dense_8b(catalog: Catalog) -> None:
    a = catalog.get("qwen3-8b").architecture
    assert a is not None
    activations = 2048 * (2 * 4096 + 2 * 12288) * 2  # batched tokens x widths x 2 bytes
    logits = 256 * 151936 * 4
    assert overhead_bytes(a) == 3 * GIB // 4 + activations + logits == 1_095_106_560
    assert 0.9 * GIB < overhead_bytes(a) < 1.2 * GIB  # the docstring's band for Qwen3


def test_overhead_of_a_moe_uses_the_active_experts_width() -> None:
    moe = arch(num_experts=16, experts_per_token=2, moe_intermediate=300, intermediate=5000)
    width = 300 * 2  # not the dense intermediate_size
    assert overhead_bytes(moe) == 3 * GIB // 4 + 2048 * (2 * 512 + 2 * width) * 2 + 256 * 1000 * 4
    # Without the per-expert sizes the dense width is used; without any, 4 x hidden.
    no_moe_sizes = arch(num_experts=16, intermediate=5000)
    assert overhead_bytes(no_moe_sizes) == overhead_bytes(arch(intermediate=5000))
    assert overhead_bytes(arch(intermediate=None)) == overhead_bytes(arch(intermediate=4 * 512))
    # Experts per token alone (no expert sizes) is no MoE width either.
    assert overhead_bytes(arch(experts_per_token=2)) == overhead_bytes(arch())


def test_overhead_follows_the_settings() -> None:
    a = arch()
    custom = EstimatorSettings(base_overhead_bytes=0, batched_tokens=10, max_num_seqs=3,
                               activation_bytes=4)
    assert overhead_bytes(a, custom) == 10 * (2 * 512 + 2 * 1024) * 4 + 3 * 1000 * 4
    assert EstimatorSettings.for_cpu_engine().base_overhead_bytes == 5 * GIB // 4  # 1.25 GiB
    assert (overhead_bytes(a, EstimatorSettings.for_cpu_engine()) - overhead_bytes(a)
            == GIB // 2)


# -- weights per quantization ----------------------------------------------------------------------
def test_dense_and_gguf_weights() -> None:
    a = arch(params_total=1e9)
    assert weight_bytes(a, "none") == weight_bytes(a, "bf16") == 2_000_000_000
    assert weight_bytes(a, "fp32") == 4_000_000_000
    assert weight_bytes(a, "q6_k") == 820_000_000  # 6.56 bits
    assert weight_bytes(a, "q8_0") == 1_062_500_000  # 8.5 bits
    assert weight_bytes(arch(params_total=3.0), "bf16") == 6
    assert weight_bytes(arch(params_total=2.5), "bf16") == 5  # whole bytes, rounded up
    assert weight_bytes(arch(params_total=1.3), "q8_0") == 2


def test_awq_and_gptq_bits_group_and_moe_gates() -> None:
    a = arch(params_total=1e9)  # tied: embeddings 1000 x 512 stay 16-bit
    kept = 1000 * 512
    four_bit = (1e9 - kept) * (4 + 20 / 128) / 8 + kept * 2
    assert weight_bytes(a, "awq") == weight_bytes(a, "gptq") == math.ceil(four_bit)
    eight_bit = (1e9 - kept) * (8 + 24 / 64) / 8 + kept * 2
    assert weight_bytes(a, "gptq", quant_bits=8, group_size=64) == math.ceil(eight_bit)
    settings = EstimatorSettings(quant_bits=8, quant_group_size=64)
    assert weight_bytes(a, "awq", settings) == math.ceil(eight_bit)
    # A MoE's router gates (layers x hidden x experts) stay 16-bit too.
    moe = arch(params_total=1e9, num_experts=16, experts_per_token=2, moe_intermediate=300)
    kept_moe = kept + 4 * 512 * 16
    assert weight_bytes(moe, "awq") == math.ceil(
        (1e9 - kept_moe) * (4 + 20 / 128) / 8 + kept_moe * 2)
    # An untied lm_head counts twice.
    untied = arch(params_total=1e9, tied_embeddings=False)
    kept_untied = 2 * 1000 * 512
    assert weight_bytes(untied, "awq") == math.ceil(
        (1e9 - kept_untied) * (4 + 20 / 128) / 8 + kept_untied * 2)


def test_tiny_models_never_get_negative_quantized_weights() -> None:
    tiny = arch(params_total=1000.0)  # fewer parameters than its embeddings: all kept 16-bit
    assert weight_bytes(tiny, "awq") == 1000 * 512 * 2
    assert weight_bytes(tiny, "fp8") == 1000 * 512 * 2


def test_fp8_scales_and_kept_embeddings(catalog: Catalog) -> None:
    a = arch(params_total=1e9)
    kept = 1000 * 512
    assert weight_bytes(a, "fp8") == math.ceil((1e9 - kept) * (1 + 4 / 128**2) + kept * 2)
    thinking = catalog.get("qwen3-4b-thinking-2507")
    assert thinking.quantization == "fp8"
    assert footprint(thinking).weight_bytes == pytest.approx(4.5e9, rel=0.05)  # record: 4.5 GB


# -- the fit at its limits ---------------------------------------------------------------------
def test_fits_exactly_at_the_usable_memory() -> None:
    total = 1000 * MIB
    f = fp(weights=300 * MIB, overhead=100 * MIB, kv_per_token=MIB)
    # 500 MiB usable = 600 free - 100 buffer: 400 fixed + 100 tokens x 1 MiB, exactly half the card.
    est = estimate_footprint(f, 100, total, 600 * MIB, 100 * MIB)
    assert (est.fits, est.verdict, est.gpu_memory_utilization) == (True, "fits", 0.5)
    assert est.max_context == 100
    assert est.total_bytes == 500 * MIB
    assert est.kv_bytes == 100 * MIB
    assert est.usable_bytes == 500 * MIB
    one_more = estimate_footprint(f, 101, total, 600 * MIB, 100 * MIB)
    assert (one_more.fits, one_more.verdict) == (False, "context_too_big")
    assert one_more.gpu_memory_utilization is None
    assert max_context_for(f, total, 600 * MIB, 100 * MIB) == 100


def test_weights_exactly_filling_the_usable_memory_leave_no_context() -> None:
    total = 1000 * MIB
    f = fp(weights=300 * MIB, overhead=100 * MIB, kv_per_token=MIB)
    est = estimate_footprint(f, 0, total, 500 * MIB, 100 * MIB)
    assert (est.fits, est.verdict) == (True, "fits")  # weights + overhead == usable: no context
    assert est.max_context == 0
    assert estimate_footprint(f, 1, total, 500 * MIB, 100 * MIB).verdict == "context_too_big"
    assert estimate_footprint(f, 0, total, 500 * MIB - 1, 100 * MIB).verdict == "weights_too_big"
    # One token's room exactly: one token of context.
    assert max_context_for(f, total, 501 * MIB, 100 * MIB) == 1
    assert max_context_for(f, total, 501 * MIB - 1, 100 * MIB) == 0


def test_no_usable_memory_and_the_whole_card() -> None:
    f = fp(weights=MIB, overhead=MIB, kv_per_token=MIB, max_position=10**9)
    assert max_context_for(f, 1000 * MIB, 100 * MIB, 100 * MIB) == 0  # nothing usable
    # The reservation never exceeds the whole card, even when "free" reads higher than total.
    assert max_context_for(f, 1000 * MIB, 5000 * MIB, 0) == 998
    est = estimate_footprint(f, 1000, 1000 * MIB, 5000 * MIB, 0)
    assert est.verdict == "context_too_big"  # more than 100 % of the card
    assert estimate_footprint(f, 998, 1000 * MIB, 5000 * MIB, 0).gpu_memory_utilization == 1.0


def test_the_context_is_capped_at_the_models_maximum() -> None:
    f = fp(weights=MIB, overhead=MIB, kv_per_token=1024, max_position=4096)
    assert max_context_for(f, CARD, CARD, 0) == 4096
    est = estimate_footprint(f, 4096, CARD, CARD, 0)
    assert est.fits
    assert est.model_max_context == 4096
    beyond = estimate_footprint(f, 4097, CARD, CARD, 0)
    assert (beyond.fits, beyond.verdict) == (False, "beyond_model_max")


def test_utilization_rounds_up_to_a_thousandth() -> None:
    assert utilization_for(0, CARD) == 0.0
    assert utilization_for(CARD, CARD) == 1.0
    assert utilization_for(CARD // 1000 * 3 + 5, CARD) == 0.004
    assert utilization_for(1, 1000, resolution=10) == 0.1
    f = fp(weights=250 * MIB, overhead=0, kv_per_token=MIB)
    assert estimate_footprint(f, 0, 1000 * MIB, 1000 * MIB, 0).gpu_memory_utilization == 0.25
    assert estimate_footprint(f, 1, 1000 * MIB, 1000 * MIB, 0).gpu_memory_utilization == 0.251


@pytest.mark.parametrize(("total", "free", "buffer", "message"), [
    (0, 0, 0, "device total memory must be positive, got 0"),
    (-1, 0, 0, "got -1"),
    (GIB, -1, 0, "free memory and buffer must not be negative"),
    (GIB, 0, -1, "free memory and buffer must not be negative"),
])
def test_impossible_device_figures_are_refused(total: int, free: int, buffer: int,
                                               message: str) -> None:
    f = fp(weights=MIB, overhead=MIB, kv_per_token=1024)
    with pytest.raises(ValueError, match=message):
        estimate_footprint(f, 1, total, free, buffer)
    with pytest.raises(ValueError, match=message):
        max_context_for(f, total, free, buffer)


def test_an_empty_device_is_accepted() -> None:
    est = estimate_footprint(fp(weights=MIB, overhead=MIB, kv_per_token=1024), 0, GIB, 0, 0)
    assert (est.fits, est.verdict, est.max_context) == (False, "weights_too_big", 0)


def test_fit_uses_the_wanted_context_the_default_or_the_maximum(catalog: Catalog) -> None:
    f = fp(weights=100 * MIB, overhead=100 * MIB, kv_per_token=MIB, max_position=300)
    assert fit_footprint(f, 1000 * MIB, 1000 * MIB, 0).context_tokens == 300  # the model's max
    assert fit_footprint(f, 1000 * MIB, 1000 * MIB, 0, wanted=50).context_tokens == 50
    assert fit_footprint(f, 1000 * MIB, 400 * MIB, 0, wanted=250).context_tokens == 200
    nothing = fit_footprint(f, 1000 * MIB, 150 * MIB, 0, wanted=64)
    assert (nothing.fits, nothing.context_tokens, nothing.max_context) == (False, 64, 0)
    with pytest.raises(ValueError, match="got -1"):
        fit_footprint(f, 1000 * MIB, 1000 * MIB, 0, wanted=-1)
    entry = catalog.get("demo-tiny-a")
    assert fit_context(entry, CARD, CARD, BUFFER).context_tokens == entry.default_context == 1024
    assert fit_context(entry, CARD, CARD, BUFFER, wanted=2048).context_tokens == 2048
    est = Estimator(catalog)
    assert est.fit_context(entry, CARD, CARD, BUFFER).context_tokens == 1024
    assert est.fit_context(entry, CARD, CARD, BUFFER, wanted=0).context_tokens == 0
    assert est.max_context(entry, CARD, CARD, BUFFER) == max_context(entry, CARD, CARD, BUFFER)
    assert est.estimate(entry, 77, CARD, CARD, BUFFER) == estimate(entry, 77, CARD, CARD, BUFFER)


def test_the_buffer_default_is_one_gib(catalog: Catalog) -> None:
    entry = catalog.get("qwen3-4b-instruct-2507")
    with_default = estimate(entry, 1024, CARD, 10 * GIB)
    assert with_default.buffer_bytes == GIB
    assert with_default == estimate(entry, 1024, CARD, 10 * GIB, GIB)
    assert max_context(entry, CARD, 10 * GIB) == max_context(entry, CARD, 10 * GIB, GIB)
    assert fit_context(entry, CARD, 10 * GIB) == fit_context(entry, CARD, 10 * GIB, GIB)
    est = Estimator(catalog)
    assert est.estimate(entry, 1024, CARD, 10 * GIB).buffer_bytes == GIB
    assert est.max_context(entry, CARD, 10 * GIB) == est.max_context(entry, CARD, 10 * GIB, GIB)
    assert est.fit_context(entry, CARD, 10 * GIB) == est.fit_context(entry, CARD, 10 * GIB, GIB)


def test_the_settings_reach_every_entry_point(catalog: Catalog) -> None:
    entry = catalog.get("demo-tiny-a")
    cpu = EstimatorSettings.for_cpu_engine()
    host = int(7.84 * GIB)
    ref = estimate(entry, 512, host, host, BUFFER, settings=cpu)
    assert ref.overhead_bytes == overhead_bytes(entry.architecture, cpu)  # type: ignore[arg-type]
    assert max_context(entry, host, 2 * GIB, BUFFER, settings=cpu) < max_context(
        entry, host, 2 * GIB, BUFFER)
    assert fit_context(entry, host, host, BUFFER, settings=cpu).overhead_bytes == ref.overhead_bytes
    assert Estimator(catalog, cpu).estimate(entry, 512, host, host, BUFFER) == ref
    coarse = EstimatorSettings(utilization_resolution=10)
    # 0.77 GiB of 7.84: 0.0963, rounded up to a tenth or to a thousandth.
    assert estimate(entry, 512, host, host, BUFFER, settings=coarse).gpu_memory_utilization == 0.1
    assert estimate(entry, 512, host, host, BUFFER).gpu_memory_utilization == 0.097
    assert fit_context(entry, host, host, BUFFER, settings=coarse).gpu_memory_utilization == 0.1
    assert max_context(entry, host, int(0.78 * GIB) + BUFFER, BUFFER, settings=coarse) == 0
    assert max_context(entry, host, int(0.78 * GIB) + BUFFER, BUFFER) > 0


# -- the report --------------------------------------------------------------------------------
@pytest.mark.parametrize(("n", "text"), [
    (GIB, "1.00 GiB"), (GIB - 1, "1024.0 MiB"), (3 * GIB // 2, "1.50 GiB"), (MIB, "1.0 MiB"),
    (MIB - 1, "1024.0 KiB"), (1536, "1.5 KiB"), (0, "0.0 KiB"), (-2 * GIB, "-2.00 GiB"),
    (-MIB, "-1.0 MiB"),
])
def test_bytes_for_people(n: int, text: str) -> None:
    assert fmt_bytes(n) == text


def test_each_verdict_explains_itself_with_figures() -> None:
    total = 1000 * MIB
    f = fp(weights=300 * MIB, overhead=100 * MIB, kv_per_token=MIB, max_position=200)
    fits = estimate_footprint(f, 100, total, 600 * MIB, 100 * MIB)
    assert fits.reason == ("fits: 500.0 MiB (weights 300.0 MiB + KV 100.0 MiB + overhead "
                           "100.0 MiB) within 600.0 MiB free - 100.0 MiB buffer = 500.0 MiB "
                           "usable; gpu_memory_utilization 0.500 of 1000.0 MiB total")
    too_long = estimate_footprint(f, 150, total, 600 * MIB, 100 * MIB)
    assert too_long.reason == ("needs 550.0 MiB (weights 300.0 MiB + KV cache for 150 tokens "
                               "150.0 MiB + overhead 100.0 MiB) but 600.0 MiB free - 100.0 MiB "
                               "buffer = 500.0 MiB usable; at most 100 tokens of context fit")
    too_big = estimate_footprint(f, 10, total, 300 * MIB, 100 * MIB)
    assert too_big.reason == ("the weights (300.0 MiB) and engine overhead (100.0 MiB) alone "
                              "exceed 300.0 MiB free - 100.0 MiB buffer = 200.0 MiB usable")
    beyond = estimate_footprint(f, 201, total, 600 * MIB, 100 * MIB)
    assert beyond.reason == "a context of 201 tokens exceeds the model's maximum of 200"
    # Less free memory than the buffer: nothing usable, never a negative figure.
    assert estimate_footprint(f, 10, total, 50 * MIB, 100 * MIB).usable_bytes == 0


def test_as_dict_is_the_json_of_estimate() -> None:
    f = fp(weights=300 * MIB, overhead=100 * MIB, kv_per_token=MIB, max_position=200)
    est = estimate_footprint(f, 100, 1000 * MIB, 600 * MIB, 100 * MIB)
    assert est.as_dict() == {
        "model": "m", "context_tokens": 100, "weight_bytes": 300 * MIB, "kv_bytes": 100 * MIB,
        "overhead_bytes": 100 * MIB, "total_bytes": 500 * MIB, "device_total_bytes": 1000 * MIB,
        "device_free_bytes": 600 * MIB, "buffer_bytes": 100 * MIB, "fits": True,
        "reason": est.reason, "max_context": 100, "gpu_memory_utilization": 0.5,
        "source": "catalog", "verdict": "fits"}
    assert json.loads(json.dumps(est.as_dict())) == est.as_dict()


# -- config.json ---------------------------------------------------------------------------------
def test_qwen3_14b_config_counts_its_parameters() -> None:
    a = architecture_from_config(QWEN3_14B, None)
    assert (a.layers, a.q_heads, a.kv_heads, a.head_dim, a.hidden, a.vocab) == (
        40, 40, 8, 128, 5120, 151936)
    assert a.tied_embeddings is False
    assert a.max_position == 40960
    assert a.intermediate == 17408
    attn = 5120 * 40 * 128 * 2 + 5120 * 8 * 128 * 2 + 2 * 128 + 2 * 5120
    per_layer = attn + 3 * 5120 * 17408
    embed = 151936 * 5120 * 2 + 5120
    assert a.params_total == a.params_active == 40 * per_layer + embed
    assert a.params_total == pytest.approx(14.8e9, rel=0.01)  # FACTS.md
    tied = architecture_from_config(dict(QWEN3_14B, tie_word_embeddings=True), None)
    assert a.params_total - tied.params_total == 151936 * 5120


def test_moe_config_counts_total_and_active_parameters() -> None:
    cfg = {"hidden_size": 2048, "num_hidden_layers": 48, "num_attention_heads": 32,
           "num_key_value_heads": 4, "head_dim": 128, "vocab_size": 151936,
           "tie_word_embeddings": False, "max_position_embeddings": 262144,
           "num_experts": 128, "num_experts_per_tok": 8, "moe_intermediate_size": 768,
           "intermediate_size": 6144}
    a = architecture_from_config(cfg, None)
    assert a.params_total == pytest.approx(30.5e9, rel=0.01)  # FACTS.md: 30.5 B total
    assert a.params_active == pytest.approx(3.3e9, rel=0.05)  # 3.3 B active
    attn = 2048 * 32 * 128 * 2 + 2048 * 4 * 128 * 2 + 2 * 128 + 2 * 2048
    expert = 3 * 2048 * 768
    embed = 151936 * 2048 * 2 + 2048
    assert a.params_total == 48 * (attn + 128 * expert + 2048 * 128) + embed
    assert a.params_active == 48 * (attn + 8 * expert + 2048 * 128) + embed
    assert (a.num_experts, a.experts_per_token, a.moe_intermediate) == (128, 8, 768)
    # Without the per-expert sizes the parameters come from the fallback.
    fallback = arch(params_total=7.0, params_active=3.0)
    for missing in ("moe_intermediate_size", "num_experts_per_tok"):
        partial = {k: v for k, v in cfg.items() if k != missing}
        b = architecture_from_config(partial, fallback)
        assert (b.params_total, b.params_active) == (7.0, 3.0)


def test_config_gaps_come_from_the_fallback_or_the_shape() -> None:
    fallback = arch(head_dim=96, kv_heads=3, tied_embeddings=True, max_position=777,
                    params_total=11.0, params_active=5.0)
    # No num_key_value_heads: as many KV heads as query heads; no head_dim: hidden / heads.
    cfg = {"hidden_size": 1024, "num_hidden_layers": 2, "num_attention_heads": 8,
           "vocab_size": 100, "intermediate_size": 64, "max_position_embeddings": 64}
    a = architecture_from_config(cfg, None)
    assert (a.kv_heads, a.head_dim, a.tied_embeddings) == (8, 128, False)
    b = architecture_from_config(cfg, fallback)
    assert (b.kv_heads, b.head_dim, b.tied_embeddings) == (3, 96, True)
    no_max = {k: v for k, v in cfg.items() if k != "max_position_embeddings"}
    assert architecture_from_config(no_max, fallback).max_position == 777
    # Explicit nulls count as missing; the file's values win over the fallback's.
    c = architecture_from_config(dict(cfg, num_key_value_heads=None, head_dim=32,
                                      tie_word_embeddings=False), fallback)
    assert (c.kv_heads, c.head_dim, c.tied_embeddings) == (3, 32, False)
    # No intermediate_size: the parameter count is the fallback's.
    no_inter = {k: v for k, v in cfg.items() if k != "intermediate_size"}
    d = architecture_from_config(dict(no_inter, max_position_embeddings=50), fallback)
    assert (d.params_total, d.params_active, d.max_position) == (11.0, 5.0, 50)
    with pytest.raises(ValueError, match="intermediate_size"):
        architecture_from_config(dict(no_inter, max_position_embeddings=50), None)


@pytest.mark.parametrize("missing", ["hidden_size", "num_hidden_layers", "num_attention_heads",
                                     "vocab_size"])
def test_config_without_a_size_is_refused(missing: str) -> None:
    cfg = {k: v for k, v in QWEN3_14B.items() if k not in (missing, "head_dim")}
    with pytest.raises(ValueError, match="lacks the sizes the estimator needs"):
        architecture_from_config(cfg, None)


def test_read_config_json(tmp_path: Path) -> None:
    assert read_config_json(tmp_path) is None  # absent
    (tmp_path / "config.json").write_text("[1, 2]", encoding="utf-8")
    assert read_config_json(tmp_path) is None  # not an object
    (tmp_path / "config.json").write_text("{not json", encoding="utf-8")
    assert read_config_json(tmp_path) is None
    (tmp_path / "config.json").write_text('{"hidden_size": 8}', encoding="utf-8")
    assert read_config_json(tmp_path) == {"hidden_size": 8}


def write_config(directory: Path, cfg: dict[str, object]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(cfg), encoding="utf-8")
    return directory


def test_autoawq_key_names_are_read(catalog: Catalog, tmp_path: Path) -> None:
    entry = catalog.get("qwen3-14b")
    d = write_config(tmp_path / "a", dict(QWEN3_14B, quantization_config={
        "quant_method": "awq", "w_bit": 8, "q_group_size": 32}))
    f = footprint(entry, d)
    assert f.weight_bytes == weight_bytes(f.architecture, "awq", quant_bits=8, group_size=32)
    assert f.source == f"config.json in {d}"
    gptq = write_config(tmp_path / "g", dict(QWEN3_14B, quantization_config={
        "quant_method": "gptq", "bits": 8, "group_size": 64}))
    bf16_entry = entry.model_copy(update={"quantization": "bf16"})
    assert footprint(bf16_entry, gptq).weight_bytes == weight_bytes(
        f.architecture, "gptq", quant_bits=8, group_size=64)
    # Another method is not a 4-bit AWQ: the catalog's quantization stands.
    other = write_config(tmp_path / "o", dict(QWEN3_14B, quantization_config={
        "quant_method": "bitsandbytes", "bits": 8}))
    assert footprint(entry, other).weight_bytes == weight_bytes(f.architecture, "awq")


@pytest.mark.parametrize(("dtype_key", "dtype", "quantization", "bytes_per_param"), [
    ("torch_dtype", "float32", "none", 4), ("dtype", "float32", "none", 4),
    ("torch_dtype", "bfloat16", "none", 2), ("torch_dtype", "float16", "none", 2),
    ("torch_dtype", "float32", "bf16", 2),  # an explicit catalog dtype wins
    ("torch_dtype", "int8", "none", 2),  # unknown: 16-bit
])
def test_dtype_of_an_unquantized_checkpoint(catalog: Catalog, tmp_path: Path, dtype_key: str,
                                            dtype: str, quantization: str,
                                            bytes_per_param: int) -> None:
    entry = catalog.get("qwen3-14b").model_copy(update={"quantization": quantization})
    d = write_config(tmp_path / "m", {**QWEN3_14B, dtype_key: dtype})
    f = footprint(entry, d)
    assert f.weight_bytes == math.ceil(f.architecture.params_total * bytes_per_param)


def test_a_config_that_cannot_be_read_falls_back_to_the_catalog(catalog: Catalog,
                                                                 tmp_path: Path) -> None:
    entry = catalog.get("qwen3-14b")
    catalog_only = footprint(entry)
    assert catalog_only.source == "catalog"
    # Only some sizes: the rest are the catalog's.
    sparse = footprint(entry, write_config(tmp_path / "s", {"num_hidden_layers": 20}))
    assert sparse.architecture.layers == 20
    assert sparse.kv_bytes_per_token == catalog_only.kv_bytes_per_token // 2
    typo = write_config(tmp_path / "t", dict(QWEN3_14B, num_attention_heads="forty"))
    f = footprint(entry, typo)
    assert f.source == f"catalog (config.json in {typo} lacks sizes)"
    assert f.architecture == entry.architecture
    assert (f.weight_bytes, f.kv_bytes_per_token, f.overhead_bytes) == (
        catalog_only.weight_bytes, catalog_only.kv_bytes_per_token, catalog_only.overhead_bytes)


def test_the_estimator_rereads_a_changed_config(catalog: Catalog, tmp_path: Path) -> None:
    models = tmp_path / "models"
    entry = catalog.get("qwen3-14b")
    est = Estimator(Catalog(catalog.entries, models))
    assert est.footprint(entry).source == "catalog"
    d = write_config(models / "qwen3-14b", QWEN3_14B)
    first = est.footprint(entry)
    assert first.source == f"config.json in {d}"
    assert est.footprint(entry) is first  # unchanged file: the cached footprint
    write_config(d, dict(QWEN3_14B, num_hidden_layers=20))
    os.utime(d / "config.json", (1, 1))
    assert est.footprint(entry).architecture.layers == 20
    (d / "config.json").unlink()
    assert est.footprint(entry).source == "catalog"
    assert est.footprint_at(entry, None).source == "catalog"


def test_sizes_missing_from_config_come_from_the_fallback() -> None:
    fallback = arch(layers=7, intermediate=333)
    cfg = {"hidden_size": 512, "num_attention_heads": 8, "vocab_size": 1000,
           "max_position_embeddings": 64}
    a = architecture_from_config(cfg, fallback)
    assert (a.layers, a.intermediate) == (7, 333)
    # head_dim from hidden / heads rounds down, as the model's own code does.
    b = architecture_from_config(dict(cfg, hidden_size=1030, num_hidden_layers=2,
                                      intermediate_size=64), None)
    assert b.head_dim == 128


def test_the_messages_that_say_why_a_config_cannot_be_sized() -> None:
    """`vrampilot models` shows these for a directory it cannot size (core.models.on_disk)."""
    # head_dim given but no attention heads: still refused for want of the heads.
    cfg = {k: v for k, v in QWEN3_14B.items() if k != "num_attention_heads"}
    with pytest.raises(ValueError, match="lacks the sizes") as info:
        architecture_from_config(cfg, None)
    assert str(info.value) == ("config.json lacks the sizes the estimator needs (hidden_size, "
                               "num_hidden_layers, num_attention_heads, vocab_size)")
    no_inter = {k: v for k, v in QWEN3_14B.items() if k != "intermediate_size"}
    with pytest.raises(ValueError, match="lacks the sizes") as info:
        architecture_from_config(no_inter, None)
    assert str(info.value) == ("config.json lacks the sizes to count parameters "
                               "(intermediate_size)")


def test_a_model_directory_reaches_every_entry_point(catalog: Catalog, tmp_path: Path) -> None:
    """estimate, max_context and fit_context read the directory's config.json when given one."""
    entry = catalog.get("qwen3-14b")
    d = write_config(tmp_path / "m", dict(QWEN3_14B, num_hidden_layers=20))  # half the KV
    assert estimate(entry, 1000, CARD, CARD, BUFFER, model_dir=d).kv_bytes == 1000 * 80 * 1024
    assert estimate(entry, 1000, CARD, CARD, BUFFER).kv_bytes == 1000 * 160 * 1024
    assert max_context(entry, CARD, CARD, BUFFER, model_dir=d) > max_context(
        entry, CARD, CARD, BUFFER)
    assert fit_context(entry, CARD, CARD, BUFFER, model_dir=d).source == f"config.json in {d}"
    # The buffer given reaches the fit.
    assert fit_context(entry, CARD, CARD, 0).buffer_bytes == 0
    assert fit_context(entry, CARD, CARD, 0).max_context > fit_context(
        entry, CARD, CARD, BUFFER).max_context


def test_a_zero_context_is_a_valid_question(catalog: Catalog) -> None:
    est = estimate(catalog.get("demo-tiny-a"), 0, CARD, CARD, BUFFER)
    assert (est.context_tokens, est.kv_bytes, est.fits) == (0, 0, True)


def test_the_estimator_uses_its_own_settings(catalog: Catalog) -> None:
    entry = catalog.get("demo-tiny-a")
    host = int(7.84 * GIB)
    coarse = Estimator(catalog, EstimatorSettings(utilization_resolution=10))
    assert coarse.estimate(entry, 512, host, host, BUFFER).gpu_memory_utilization == 0.1
    tight = int(0.78 * GIB) + BUFFER  # 0.0995 of the host: no whole tenth fits
    assert coarse.max_context(entry, host, tight, BUFFER) == 0
    assert Estimator(catalog).max_context(entry, host, tight, BUFFER) > 0


def test_moe_sizes_missing_from_config_come_from_the_fallback() -> None:
    fallback = arch(num_experts=16, experts_per_token=2, moe_intermediate=300,
                    params_total=9.0, params_active=4.0)
    cfg = {"hidden_size": 512, "num_hidden_layers": 4, "num_attention_heads": 8,
           "vocab_size": 1000, "max_position_embeddings": 64}
    a = architecture_from_config(cfg, fallback)
    assert (a.num_experts, a.experts_per_token, a.moe_intermediate) == (16, 2, 300)


def test_a_negative_context_is_refused_by_the_footprint_estimate() -> None:
    with pytest.raises(ValueError, match=r"^context must be a non-negative number of tokens, "
                                         r"got -3$"):
        estimate_footprint(fp(weights=MIB, overhead=MIB, kv_per_token=1024), -3, GIB, GIB, 0)


def test_fit_footprint_uses_the_settings_resolution(catalog: Catalog) -> None:
    f = footprint(catalog.get("demo-tiny-a"))
    host = int(7.84 * GIB)
    tight = int(0.78 * GIB) + BUFFER  # 0.0995 of the host: no whole tenth fits
    coarse = EstimatorSettings(utilization_resolution=10)
    assert fit_footprint(f, host, tight, BUFFER, settings=coarse).max_context == 0
    assert fit_footprint(f, host, tight, BUFFER).max_context > 0


def test_the_estimator_fit_gets_the_buffer_and_its_settings(catalog: Catalog) -> None:
    entry = catalog.get("demo-tiny-a")
    host = int(7.84 * GIB)
    est = Estimator(catalog)
    assert est.fit_context(entry, host, host, 0).buffer_bytes == 0
    coarse = Estimator(catalog, EstimatorSettings(utilization_resolution=10))
    assert coarse.fit_context(entry, host, host, BUFFER).gpu_memory_utilization == 0.1


def test_footprint_at_trusts_the_callers_stat(catalog: Catalog, tmp_path: Path) -> None:
    """The router stats config.json itself and passes None when it is absent: no second read."""
    models = tmp_path / "models"
    write_config(models / "qwen3-14b", dict(QWEN3_14B, num_hidden_layers=20))
    est = Estimator(Catalog(catalog.entries, models))
    entry = catalog.get("qwen3-14b")
    assert est.footprint_at(entry, None).source == "catalog"
    assert est.footprint_at(entry, 1.0).architecture.layers == 20


def test_edges_of_the_device_checks() -> None:
    f = fp(weights=MIB, overhead=MIB, kv_per_token=1024)
    assert estimate_footprint(f, 0, 1, 0, 0).verdict == "weights_too_big"  # a 1-byte device
    with pytest.raises(ValueError, match=r"^free memory and buffer must not be negative$"):
        estimate_footprint(f, 0, GIB, -1, 0)
    assert kv_bytes_per_token(arch()) == 2 * 4 * 2 * 64 * 2  # BF16 unless told otherwise


def test_the_estimate_computes_max_context_with_its_settings(catalog: Catalog) -> None:
    f = footprint(catalog.get("demo-tiny-a"))
    host = int(7.84 * GIB)
    tight = int(0.78 * GIB) + BUFFER  # 0.0995 of the host: no whole tenth fits
    coarse = EstimatorSettings(utilization_resolution=10)
    assert estimate_footprint(f, 1, host, tight, BUFFER, coarse).max_context == 0
    assert estimate_footprint(f, 1, host, tight, BUFFER).max_context > 0


def test_room_for_exactly_one_token_fits_one() -> None:
    f = fp(weights=300 * MIB, overhead=100 * MIB, kv_per_token=MIB)
    one = fit_footprint(f, 1000 * MIB, 501 * MIB, 100 * MIB, wanted=50)
    assert (one.context_tokens, one.max_context, one.fits) == (1, 1, True)


def test_a_footprints_total_at_a_context() -> None:
    """What the manager loads with when the device reports no memory (the default context)."""
    f = fp(weights=300 * MIB, overhead=100 * MIB, kv_per_token=1024)
    assert f.total_bytes(0) == 400 * MIB
    assert f.total_bytes(2048) == 402 * MIB
