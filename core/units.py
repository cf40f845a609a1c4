"""Byte units, defined once: memory figures are binary (GiB), as NVML and vLLM report them."""

MIB = 1024**2
GIB = 1024**3
