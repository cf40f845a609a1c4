"""Turn vLLM's start-up failures into the typed engine errors of core.engine.base.

vLLM raises plain ValueError/RuntimeError whose text carries the numbers a retry needs; the engine
core raises them in its own process, so the parent often sees only "Engine core initialization
failed. See root cause above." and the real message in the engine's log output. map_vllm_error
therefore looks at the exception chain and at the captured log text.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from core.engine.base import (
    ContextTooLongError,
    EngineError,
    InsufficientMemoryError,
    NoCacheMemoryError,
    UnsupportedModelError,
)

_NUM = r"([0-9]+(?:\.[0-9]+)?)"

# GPU: "Free memory on device cuda:0 (1.2/15.6 GiB) on startup is less than desired GPU memory
# utilization (0.9, 14.0 GiB)." (older releases write "start-up").
# CPU: "Available memory on node 0 (7.1/7.84 GiB) on startup is less than desired CPU memory
# utilization (0.99, 7.76 GiB)."
_STARTUP_MEMORY = re.compile(
    r"(?:Free|Available) memory on (?:device|node)[^(]*\(" + _NUM + "/" + _NUM
    + r" GiB\) on start-?up is less than desired [GC]PU memory utilization \("
    + _NUM + ", " + _NUM + " GiB\\)")
# CPU, after the weights loaded: "Available memory on node 0 (a/b GiB) on kv cache allocation is
# less than requested memory for kv (c/d GiB)" or "(c GiB)" when the size was given explicitly.
_KV_ALLOC_MEMORY = re.compile(
    r"Available memory on node [^(]*\(" + _NUM + "/" + _NUM
    + r" GiB\) on kv cache allocation is less than requested memory for kv \(" + "(-?" + _NUM[1:]
    + r"(?:/" + _NUM + ")? GiB\\)")
_NO_CACHE = re.compile(r"No available memory for the cache blocks")
_MAX_LEN_NEEDED = re.compile(r"with the model's max seq len \(([0-9]+)\)")
_MAX_LEN_FITS = re.compile(r"estimated maximum model length is ([0-9]+)")
_KV_TOO_SMALL = re.compile(r"GiB KV cache is needed, which is larger than the available KV cache")
_UNSUPPORTED_ARCH = re.compile(
    r"Model architectures? \[?'?([\w\-., ']+?)'?\]? (?:are|is) not supported"
    r"|Cannot find model module for|is not supported for now|Unsupported CPU attention [^\n.]*")
_UNSUPPORTED_QUANT = re.compile(
    r"(?:Unknown|Invalid) quantization method:? [^\s.]+"
    r"|[Qq]uantization method [^\n.]*? is not supported[^\n.]*")


def _chain(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        yield cur
        cur = cur.__cause__ or cur.__context__


def parse_vllm_message(text: str, requested_len: int | None = None) -> EngineError | None:
    """The typed error a vLLM message describes, or None when it is not one we know."""
    if m := _STARTUP_MEMORY.search(text):
        free, total, util, _want = (float(g) for g in m.groups())
        return InsufficientMemoryError(free, total, util, detail="vLLM start-up check")
    if m := _KV_ALLOC_MEMORY.search(text):
        free, total = float(m.group(1)), float(m.group(2))
        return InsufficientMemoryError(free, total, None,
                                       detail="too little left for the KV cache after the weights")
    if _NO_CACHE.search(text):
        return NoCacheMemoryError()
    if _KV_TOO_SMALL.search(text) or _MAX_LEN_FITS.search(text):
        needed = _MAX_LEN_NEEDED.search(text)
        fits = _MAX_LEN_FITS.search(text)
        return ContextTooLongError(int(needed.group(1)) if needed else requested_len,
                                   int(fits.group(1)) if fits else None)
    if m := _UNSUPPORTED_QUANT.search(text):
        return UnsupportedModelError(f"vLLM cannot load this quantization: {m.group(0).strip()}.")
    if m := _UNSUPPORTED_ARCH.search(text):
        return UnsupportedModelError(f"vLLM cannot run this model: {m.group(0).strip()}.")
    return None


def map_vllm_error(exc: BaseException, log_text: str = "",
                   requested_len: int | None = None) -> EngineError | None:
    """Map an exception raised while starting vLLM (plus the log it wrote) to a typed error."""
    for link in _chain(exc):
        if isinstance(link, EngineError):
            return link
        found = parse_vllm_message(str(link), requested_len)
        if found is not None:
            return found
    return parse_vllm_message(log_text, requested_len) if log_text else None
