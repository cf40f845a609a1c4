"""Thermal soak: sustained generation on the active model while the device is sampled, then a
report (first throttle, steady state, tokens/s first vs last, energy per token, per interval)."""
