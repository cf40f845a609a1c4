"""Ask the kernel to read a model's files into the page cache ahead of its load.

A switch starts this before it unloads the old model: the disk reads of the new weights then
overlap the old engine's shutdown and the memory-return wait instead of following them. Only a
hint (posix_fadvise WILLNEED: the kernel reads in the background and may drop the pages again
under memory pressure); no engine and no process memory is involved, so it never puts two models
in memory at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)

# What vLLM reads at load: weights and the small files around them.
_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf", ".json", ".model", ".jinja", ".txt")


def prefetch_model_files(model_dir: Path) -> int:
    """Hint every file vLLM will read in model_dir; returns the bytes hinted (0: nothing, or
    this platform has no posix_fadvise). Never raises: a failed hint only loses the head start."""
    advise = getattr(os, "posix_fadvise", None)
    if advise is None:
        return 0
    hinted = 0
    try:
        files = [p for p in model_dir.iterdir() if p.is_file() and p.suffix in _SUFFIXES]
    except OSError:
        return 0
    for path in files:
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_RDONLY)
            try:
                advise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
                hinted += os.fstat(fd).st_size
            finally:
                os.close(fd)
    logger.debug("asked the kernel to read ahead %d bytes of %s", hinted, model_dir)
    return hinted
