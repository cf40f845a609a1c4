"""How much device memory a model needs, and the context and utilization that fit a device.

Device-agnostic: it takes the device's total and free bytes. On a GPU those are NVML's
device-wide figures; with vLLM's CPU build the "device" is host memory (gpu_memory_utilization is
then a fraction of host RAM: vLLM's CPU backend says so in its own error message).

Model memory = weights + KV cache (context x bytes per token) + engine overhead:
- weights: parameters x bytes per parameter for the quantization. AWQ/GPTQ 4-bit store each
  quantized weight in 4 bits plus, per group of 128, a 16-bit scale and a 4-bit zero point
  (4 + 20/128 = 4.16 bits); embeddings, an untied lm_head and MoE router gates stay 16-bit.
  GGUF k-quants average a mix of block types (Q5_K_M ~5.5 bits, Q4_K_M ~4.85 bits). FP8
  checkpoints (Qwen's "fine-grained" FP8) store each linear weight in 8 bits plus one float32
  scale per 128 x 128 block; embeddings and an untied lm_head stay 16-bit.
- KV cache per token = 2 (K and V) x layers x kv_heads x head_dim x dtype bytes.
- engine overhead = a fixed part (CUDA context, cuBLAS workspace, allocator slack: 0.75 GiB by
  default) + the activation peak of vLLM's profiling run (one prefill chunk of `batched_tokens`
  through the widest layer, plus fp32 logits for `max_num_seqs` sequences). 0.9-1.2 GiB for the
  Qwen3 models here.

vLLM reserves gpu_memory_utilization x TOTAL memory and refuses to start when less than that is
free, so a model fits when that reservation fits in free memory minus the safety buffer.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.models.catalog import Architecture, Catalog, ModelEntry
from core.units import GIB

DEFAULT_BUFFER_BYTES = GIB

# Effective bits per parameter of the GGUF quantizations we know.
GGUF_BITS = {"q4_k_m": 4.85, "q5_k_m": 5.5, "q6_k": 6.56, "q8_0": 8.5}
# Qwen's FP8 checkpoints: one float32 scale per 128 x 128 block of a weight (weight_block_size).
FP8_BLOCK_PARAMS = 128 * 128
DENSE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
TORCH_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


@dataclass(frozen=True)
class EstimatorSettings:
    """Knobs of the overhead model and of the utilization we hand to vLLM."""

    base_overhead_bytes: int = 3 * GIB // 4
    batched_tokens: int = 2048
    max_num_seqs: int = 256
    activation_bytes: int = 2
    kv_dtype_bytes: int = 2
    quant_bits: int = 4
    quant_group_size: int = 128
    # gpu_memory_utilization is rounded up to 1/utilization_resolution.
    utilization_resolution: int = 1000

    @classmethod
    def for_cpu_engine(cls) -> EstimatorSettings:
        """Settings for vLLM's CPU build, whose "device" is host memory.

        Its worker reserves utilization x node memory and gives the KV cache that minus its own
        RSS (vllm/v1/worker/cpu_worker.py), so the fixed overhead is the worker's RSS: ~0.6 GiB
        after importing torch and vLLM here, ~0.8 GiB once running (0.1 x 7.84 GiB worked for
        the tiny model). 1.25 GiB keeps a margin.
        """
        return cls(base_overhead_bytes=5 * GIB // 4)  # pragma: no mutate (5 GiB / 4 is whole)


DEFAULT_SETTINGS = EstimatorSettings()


@dataclass(frozen=True)
class Footprint:
    """A model's memory needs apart from the context length and the device."""

    model_id: str
    weight_bytes: int
    kv_bytes_per_token: int
    overhead_bytes: int
    max_position: int
    architecture: Architecture
    source: str  # "config.json at <dir>" or "catalog"

    def total_bytes(self, context_tokens: int) -> int:
        return self.weight_bytes + self.overhead_bytes + self.kv_bytes_per_token * context_tokens


@dataclass(frozen=True)
class Estimate:
    """The answer for one model, one context and one device state."""

    model_id: str
    context_tokens: int
    weight_bytes: int
    kv_bytes: int
    overhead_bytes: int
    total_bytes: int
    device_total_bytes: int
    device_free_bytes: int
    buffer_bytes: int
    fits: bool
    max_context: int
    gpu_memory_utilization: float | None  # what to pass to vLLM; None when it does not fit
    source: str
    verdict: str = "fits"  # fits | beyond_model_max | weights_too_big | context_too_big
    model_max_context: int = 0

    @property
    def usable_bytes(self) -> int:
        return max(0, self.device_free_bytes - self.buffer_bytes)

    @property
    def reason(self) -> str:
        """One sentence saying why it fits or not, with the figures (built on demand)."""
        budget = (f"{fmt_bytes(self.device_free_bytes)} free - {fmt_bytes(self.buffer_bytes)} "
                  f"buffer = {fmt_bytes(self.usable_bytes)} usable")
        w, o = fmt_bytes(self.weight_bytes), fmt_bytes(self.overhead_bytes)
        if self.verdict == "beyond_model_max":
            return (f"a context of {self.context_tokens} tokens exceeds the model's maximum of "
                    f"{self.model_max_context}")
        if self.verdict == "weights_too_big":
            return f"the weights ({w}) and engine overhead ({o}) alone exceed {budget}"
        if self.verdict == "context_too_big":
            return (f"needs {fmt_bytes(self.total_bytes)} (weights {w} + KV cache for "
                    f"{self.context_tokens} tokens {fmt_bytes(self.kv_bytes)} + overhead {o}) "
                    f"but {budget}; at most {self.max_context} tokens of context fit")
        return (f"fits: {fmt_bytes(self.total_bytes)} (weights {w} + KV "
                f"{fmt_bytes(self.kv_bytes)} + overhead {o}) within {budget}; "
                f"gpu_memory_utilization {self.gpu_memory_utilization:.3f} of "
                f"{fmt_bytes(self.device_total_bytes)} total")

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model_id, "context_tokens": self.context_tokens,
            "weight_bytes": self.weight_bytes, "kv_bytes": self.kv_bytes,
            "overhead_bytes": self.overhead_bytes, "total_bytes": self.total_bytes,
            "device_total_bytes": self.device_total_bytes,
            "device_free_bytes": self.device_free_bytes, "buffer_bytes": self.buffer_bytes,
            "fits": self.fits, "reason": self.reason, "max_context": self.max_context,
            "gpu_memory_utilization": self.gpu_memory_utilization, "source": self.source,
            "verdict": self.verdict,
        }


def fmt_bytes(n: float) -> str:
    """Bytes for people: GiB from 1 GiB up, else MiB (KiB below 1 MiB)."""
    if abs(n) >= GIB:
        return f"{n / GIB:.2f} GiB"
    if abs(n) >= 1024**2:
        return f"{n / 1024**2:.1f} MiB"
    return f"{n / 1024:.1f} KiB"


# --- the three terms -------------------------------------------------------------------------

def kv_bytes_per_token(arch: Architecture, dtype_bytes: int = 2) -> int:
    """2 (K and V) x layers x kv_heads x head_dim x dtype bytes."""
    return 2 * arch.layers * arch.kv_heads * arch.head_dim * dtype_bytes


def weight_bytes(arch: Architecture, quantization: str,
                 settings: EstimatorSettings = DEFAULT_SETTINGS,
                 quant_bits: int | None = None, group_size: int | None = None) -> int:
    """Bytes of the weights in device memory for the given quantization."""
    params = arch.params_total
    if quantization in DENSE_BYTES:
        return math.ceil(params * DENSE_BYTES[quantization])
    if quantization == "none":
        return math.ceil(params * 2)
    if quantization in GGUF_BITS:
        return math.ceil(params * GGUF_BITS[quantization] / 8)
    if quantization == "fp8":
        kept_16bit = arch.embedding_params
        quantized = max(0.0, params - kept_16bit)
        return math.ceil(quantized * (1 + 4 / FP8_BLOCK_PARAMS) + kept_16bit * 2)
    if quantization in ("awq", "gptq"):
        bits = quant_bits or settings.quant_bits
        group = group_size or settings.quant_group_size
        # Per group: one 16-bit scale and one packed zero point of `bits` bits.
        bits_per_param = bits + (16 + bits) / group
        gates = float(arch.layers * arch.hidden * arch.num_experts) if arch.num_experts else 0.0
        kept_16bit = arch.embedding_params + gates
        quantized = max(0.0, params - kept_16bit)
        return math.ceil(quantized * bits_per_param / 8 + kept_16bit * 2)
    raise ValueError(f"no weight-size rule for quantization {quantization!r}")


def overhead_bytes(arch: Architecture, settings: EstimatorSettings = DEFAULT_SETTINGS) -> int:
    """Fixed engine overhead plus the activation peak of one profiling prefill chunk."""
    if arch.num_experts and arch.moe_intermediate and arch.experts_per_token:
        mlp_width = arch.moe_intermediate * arch.experts_per_token
    else:
        mlp_width = arch.intermediate or 4 * arch.hidden
    # Residual + attention output (2 x hidden) and the gate/up projections (2 x mlp width).
    activations = settings.batched_tokens * (2 * arch.hidden + 2 * mlp_width)
    logits = settings.max_num_seqs * arch.vocab * 4
    return settings.base_overhead_bytes + activations * settings.activation_bytes + logits


# --- architecture from config.json -----------------------------------------------------------

def _count_params(cfg: dict[str, Any], hidden: int, layers: int, q: int, kv: int, hd: int,
                  vocab: int, tied: bool) -> tuple[float, float] | None:
    """Total and active parameter counts of a Qwen3(-MoE) config, or None when it lacks sizes."""
    attn = hidden * q * hd * 2 + hidden * kv * hd * 2 + 2 * hd + 2 * hidden
    experts = cfg.get("num_experts")
    if experts:
        moe_inter = cfg.get("moe_intermediate_size")
        per_tok = cfg.get("num_experts_per_tok")
        if not moe_inter or not per_tok:
            return None
        expert = 3 * hidden * moe_inter
        total_layer = attn + experts * expert + hidden * experts
        active_layer = attn + per_tok * expert + hidden * experts
    else:
        inter = cfg.get("intermediate_size")
        if not inter:
            return None
        total_layer = active_layer = attn + 3 * hidden * inter
    embed = vocab * hidden * (1 if tied else 2) + hidden
    return float(layers * total_layer + embed), float(layers * active_layer + embed)


def architecture_from_config(cfg: dict[str, Any], fallback: Architecture | None) -> Architecture:
    """An Architecture from a Hugging Face config.json (Qwen3 key names); gaps from fallback."""
    fb = fallback.model_dump() if fallback is not None else {}

    def get(key: str, fb_key: str) -> Any:
        value = cfg.get(key)
        return value if value is not None else fb.get(fb_key)

    hidden = get("hidden_size", "hidden")
    layers = get("num_hidden_layers", "layers")
    q = get("num_attention_heads", "q_heads")
    kv = get("num_key_value_heads", "kv_heads") or q
    hd = cfg.get("head_dim") or fb.get("head_dim") or (hidden // q if hidden and q else None)
    vocab = get("vocab_size", "vocab")
    tied = bool(cfg.get("tie_word_embeddings", fb.get("tied_embeddings")))
    if hidden is None or layers is None or q is None or hd is None or vocab is None:
        raise ValueError("config.json lacks the sizes the estimator needs "
                         "(hidden_size, num_hidden_layers, num_attention_heads, vocab_size)")
    counted = _count_params(cfg, hidden, layers, q, kv, hd, vocab, tied)
    total, active = counted if counted else (fb.get("params_total"), fb.get("params_active"))
    # Both come from one source (both None or neither): `and` would be the same test.
    if total is None or active is None:  # pragma: no mutate
        raise ValueError("config.json lacks the sizes to count parameters (intermediate_size)")
    return Architecture(
        layers=layers, q_heads=q, kv_heads=kv, head_dim=hd, hidden=hidden, vocab=vocab,
        tied_embeddings=tied, params_total=total, params_active=active,
        max_position=get("max_position_embeddings", "max_position"),
        intermediate=get("intermediate_size", "intermediate"),
        num_experts=get("num_experts", "num_experts"),
        experts_per_token=get("num_experts_per_tok", "experts_per_token"),
        moe_intermediate=get("moe_intermediate_size", "moe_intermediate"),
    )


def read_config_json(model_dir: Path) -> dict[str, Any] | None:
    """The model directory's config.json as a dict, or None when absent or unreadable."""
    try:
        path = model_dir / "config.json"
        # Equivalent mutants: "UTF-8" is the same codec, None the same under a UTF-8 locale.
        data = json.loads(path.read_text(encoding="utf-8"))  # pragma: no mutate
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def footprint(entry: ModelEntry, model_dir: Path | None = None,
              settings: EstimatorSettings = DEFAULT_SETTINGS) -> Footprint:
    """The model's weights, KV bytes per token and overhead.

    Reads config.json from model_dir when it holds one (its quantization_config too), else uses the
    catalog's architecture. A remote entry has no footprint: ValueError.
    """
    if entry.is_remote or entry.architecture is None:
        raise ValueError(f"{entry.id} is a remote endpoint: it uses no local memory")
    arch = entry.architecture
    source = "catalog"
    bits: int | None = None
    group: int | None = None
    quantization: str = entry.quantization
    cfg = read_config_json(model_dir) if model_dir is not None else None
    if cfg is not None:
        try:
            arch = architecture_from_config(cfg, entry.architecture)
            source = f"config.json in {model_dir}"
        except (ValueError, TypeError):
            source = f"catalog (config.json in {model_dir} lacks sizes)"
        qcfg = cfg.get("quantization_config")
        if isinstance(qcfg, dict) and qcfg.get("quant_method") in ("awq", "gptq"):
            quantization = str(qcfg["quant_method"])
            bits = qcfg.get("bits") or qcfg.get("w_bit")
            group = qcfg.get("group_size") or qcfg.get("q_group_size")
        elif isinstance(qcfg, dict) and qcfg.get("quant_method") == "fp8":
            quantization = "fp8"
        elif entry.quantization == "none":  # an explicit fp32/fp16/bf16 in the catalog stands
            dtype = cfg.get("torch_dtype") or cfg.get("dtype")
            if dtype in TORCH_DTYPE_BYTES:
                quantization = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}[dtype]
    return Footprint(
        model_id=entry.id,
        weight_bytes=weight_bytes(arch, quantization, settings, bits, group),
        kv_bytes_per_token=kv_bytes_per_token(arch, settings.kv_dtype_bytes),
        overhead_bytes=overhead_bytes(arch, settings),
        max_position=arch.max_position,
        architecture=arch,
        source=source,
    )


# --- fitting to a device ---------------------------------------------------------------------

def _check_device(total: int, free: int, buffer: int) -> None:
    if total <= 0:
        raise ValueError(f"device total memory must be positive, got {total}")
    if free < 0 or buffer < 0:
        raise ValueError("free memory and buffer must not be negative")


def utilization_for(needed_bytes: int, device_total_bytes: int,
                    resolution: int = DEFAULT_SETTINGS.utilization_resolution) -> float:
    """needed / total rounded UP to 1/resolution (vLLM reserves that fraction of total memory)."""
    units = -(-needed_bytes * resolution // device_total_bytes)
    return units / resolution


def max_context_for(fp: Footprint, device_total_bytes: int, device_free_bytes: int,
                    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
                    settings: EstimatorSettings = DEFAULT_SETTINGS) -> int:
    """The largest context that fits (capped at the model's own maximum); 0 if weights don't."""
    _check_device(device_total_bytes, device_free_bytes, buffer_bytes)
    usable = device_free_bytes - buffer_bytes
    if usable <= 0:
        return 0
    res = settings.utilization_resolution
    # The largest utilization step whose reservation fits in the usable memory.
    units = min(res, usable * res // device_total_bytes)
    reservable = units * device_total_bytes // res
    room = reservable - fp.weight_bytes - fp.overhead_bytes
    if room < fp.kv_bytes_per_token:
        return 0
    return int(min(fp.max_position, room // fp.kv_bytes_per_token))


def estimate_footprint(fp: Footprint, context_tokens: int, device_total_bytes: int,
                       device_free_bytes: int, buffer_bytes: int = DEFAULT_BUFFER_BYTES,
                       settings: EstimatorSettings = DEFAULT_SETTINGS, *,
                       max_ctx: int | None = None) -> Estimate:
    """Does fp with context_tokens fit this device's free memory minus the buffer?"""
    if context_tokens < 0:
        raise ValueError(f"context must be a non-negative number of tokens, got {context_tokens}")
    _check_device(device_total_bytes, device_free_bytes, buffer_bytes)
    kv = fp.kv_bytes_per_token * context_tokens
    total = fp.weight_bytes + kv + fp.overhead_bytes
    usable = max(0, device_free_bytes - buffer_bytes)
    if max_ctx is None:
        max_ctx = max_context_for(fp, device_total_bytes, device_free_bytes, buffer_bytes,
                                  settings)
    res = settings.utilization_resolution
    units = -(-total * res // device_total_bytes)  # rounded up: vLLM reserves units/res x total
    reserved = units * device_total_bytes // res
    if context_tokens > fp.max_position:
        verdict = "beyond_model_max"
    elif fp.weight_bytes + fp.overhead_bytes > usable:
        verdict = "weights_too_big"
    elif units > res or reserved > usable:
        verdict = "context_too_big"
    else:
        verdict = "fits"
    fits = verdict == "fits"
    return Estimate(
        model_id=fp.model_id, context_tokens=context_tokens, weight_bytes=fp.weight_bytes,
        kv_bytes=kv, overhead_bytes=fp.overhead_bytes, total_bytes=total,
        device_total_bytes=device_total_bytes, device_free_bytes=device_free_bytes,
        buffer_bytes=buffer_bytes, fits=fits, max_context=max_ctx,
        gpu_memory_utilization=units / res if fits else None, source=fp.source,
        verdict=verdict, model_max_context=fp.max_position,
    )


def estimate(entry: ModelEntry, context_tokens: int, device_total_bytes: int,
             device_free_bytes: int, buffer_bytes: int = DEFAULT_BUFFER_BYTES, *,
             model_dir: Path | None = None,
             settings: EstimatorSettings = DEFAULT_SETTINGS) -> Estimate:
    """Does entry with context_tokens fit? With weights/KV/overhead, reason and the utilization.

    model_dir: the model's directory; its config.json, when present, overrides the catalog's
    architecture. Negative context_tokens: ValueError.
    """
    if context_tokens < 0:
        raise ValueError(f"context must be a non-negative number of tokens, got {context_tokens}")
    fp = footprint(entry, model_dir, settings)
    return estimate_footprint(fp, context_tokens, device_total_bytes, device_free_bytes,
                              buffer_bytes, settings)


def max_context(entry: ModelEntry, device_total_bytes: int, device_free_bytes: int,
                buffer_bytes: int = DEFAULT_BUFFER_BYTES, *, model_dir: Path | None = None,
                settings: EstimatorSettings = DEFAULT_SETTINGS) -> int:
    """The largest context that fits beside the weights (0 if the weights alone don't fit)."""
    return max_context_for(footprint(entry, model_dir, settings), device_total_bytes,
                           device_free_bytes, buffer_bytes, settings)


def fit_context(entry: ModelEntry, device_total_bytes: int, device_free_bytes: int,
                buffer_bytes: int = DEFAULT_BUFFER_BYTES, *, wanted: int | None = None,
                model_dir: Path | None = None,
                settings: EstimatorSettings = DEFAULT_SETTINGS) -> Estimate:
    """The estimate at min(wanted or the entry's default_context, largest context that fits).

    What the manager loads with: `context_tokens` -> max_model_len, `gpu_memory_utilization` ->
    memory_utilization. When nothing fits, the estimate at the wanted context (fits False).
    """
    return fit_footprint(footprint(entry, model_dir, settings), device_total_bytes,
                         device_free_bytes, buffer_bytes, wanted=wanted
                         if wanted is not None else entry.default_context, settings=settings)


def fit_footprint(fp: Footprint, device_total_bytes: int, device_free_bytes: int,
                  buffer_bytes: int = DEFAULT_BUFFER_BYTES, *, wanted: int | None = None,
                  settings: EstimatorSettings = DEFAULT_SETTINGS) -> Estimate:
    """The estimate at min(wanted or the model's maximum, the largest context that fits)."""
    want = wanted if wanted is not None else fp.max_position
    if want < 0:
        raise ValueError(f"context must be a non-negative number of tokens, got {want}")
    best = max_context_for(fp, device_total_bytes, device_free_bytes, buffer_bytes, settings)
    context = min(want, best) if best > 0 else want
    # max_ctx only spares estimate_footprint computing `best` again (no mutant can differ).
    return estimate_footprint(fp, context, device_total_bytes, device_free_bytes, buffer_bytes,
                              settings, max_ctx=best)  # pragma: no mutate


class Estimator:
    """Estimates for a catalog's entries, reading config.json from each model's directory.

    Footprints are cached per model id and re-read when the directory's config.json appears,
    disappears or changes (one stat per call).
    """

    def __init__(self, catalog: Catalog, settings: EstimatorSettings = DEFAULT_SETTINGS) -> None:
        self.catalog = catalog
        self.settings = settings
        self._cache: dict[str, tuple[float | None, Footprint]] = {}

    def footprint(self, entry: ModelEntry) -> Footprint:
        directory = self.catalog.local_path(entry)
        try:
            stamp: float | None = (directory / "config.json").stat().st_mtime
        except OSError:
            stamp = None  # pragma: no mutate (any stamp of an absent file reads the catalog)
        return self.footprint_at(entry, stamp)

    def footprint_at(self, entry: ModelEntry, config_mtime: float | None) -> Footprint:
        """The footprint when the caller has already stat'ed config.json (None: absent)."""
        cached = self._cache.get(entry.id)
        if cached is not None and cached[0] == config_mtime:
            return cached[1]
        directory = self.catalog.local_path(entry) if config_mtime is not None else None
        fp = footprint(entry, directory, self.settings)
        self._cache[entry.id] = (config_mtime, fp)
        return fp

    def estimate(self, entry: ModelEntry, context_tokens: int, device_total_bytes: int,
                 device_free_bytes: int, buffer_bytes: int = DEFAULT_BUFFER_BYTES) -> Estimate:
        return estimate_footprint(self.footprint(entry), context_tokens, device_total_bytes,
                                  device_free_bytes, buffer_bytes, self.settings)

    def max_context(self, entry: ModelEntry, device_total_bytes: int, device_free_bytes: int,
                    buffer_bytes: int = DEFAULT_BUFFER_BYTES) -> int:
        return max_context_for(self.footprint(entry), device_total_bytes, device_free_bytes,
                               buffer_bytes, self.settings)

    def fit_context(self, entry: ModelEntry, device_total_bytes: int, device_free_bytes: int,
                    buffer_bytes: int = DEFAULT_BUFFER_BYTES,
                    wanted: int | None = None) -> Estimate:
        return fit_footprint(self.footprint(entry), device_total_bytes, device_free_bytes,
                             buffer_bytes, wanted=wanted if wanted is not None
                             else entry.default_context, settings=self.settings)
