"""Which models are already on this machine: the Hugging Face cache and vrampilot's models folder.

A catalog entry with an `hf_repo` is on disk when that repository has a complete snapshot in the
Hugging Face cache (laid out by huggingface_hub: models--ORG--NAME/{refs,snapshots,blobs}) or a
complete copy in <models_dir>/ORG/NAME. huggingface_hub writes a file under a temporary name and
renames it only once all its bytes are in, so a snapshot never holds a partial file; a snapshot
still counts only when the files it needs are all there (and match the cached file list when
huggingface_hub recorded one), so an interrupted download is never "on disk".

Other cached models that vLLM can load (a config.json naming a causal-LM architecture, sizes the
estimator can read, a quantization it can size, safetensors weights) are listed as "other models
on this machine" with the estimator's verdict; `as_entry` makes one loadable like a catalog entry.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.models.catalog import Catalog, ModelEntry

# What vLLM needs from a repository: weights, config, generation config, tokenizer. Top level only
# (repositories also carry onnx/, original/ and other formats in sub-folders).
ALLOW_PATTERNS = ("*.safetensors", "*.json", "*.txt", "tokenizer.model", "*.tiktoken", "*.jinja")
IGNORE_PATTERNS = ("*/*",)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tiktoken.model")
# Quantizations the estimator can size and vLLM loads (config.json's quantization_config).
LOADABLE_QUANT_METHODS = frozenset({"awq", "gptq", "fp8"})


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (huggingface_hub reads it once at
    import): HF_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


def safetensors_problem(path: Path) -> str | None:
    """None when the file is as long as its header says; else what is wrong (truncated, corrupt).

    A safetensors file is an 8-byte header length, a JSON header giving each tensor's byte range,
    then the data: its size is fixed by the header, so a cut-off file is caught without hashing.
    """
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                return f"{path.name} is truncated ({size} bytes, no header)"
            (header_len,) = struct.unpack("<Q", raw)
            if header_len > min(size, 100 * 1024**2):
                return f"{path.name} is corrupt (header length {header_len} of a {size}-byte file)"
            header = json.loads(f.read(header_len))
    except OSError as exc:
        return f"{path.name} cannot be read ({exc.strerror or exc})"
    except ValueError:
        return f"{path.name} is corrupt (its header is not JSON)"
    ends = [int(t["data_offsets"][1]) for k, t in header.items()
            if k != "__metadata__" and isinstance(t, dict) and "data_offsets" in t]
    expected = 8 + header_len + max(ends, default=0)
    if size != expected:
        state = "truncated" if size < expected else "longer than its header says"
        return f"{path.name} is {state} ({size} of {expected} bytes)"
    return None


def weight_files(model_dir: Path) -> list[Path] | str:
    """The safetensors files the model needs, or what is missing."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return "model.safetensors.index.json is corrupt"
        missing = [n for n in names if not (model_dir / n).is_file()]
        if missing:
            return f"{len(missing)} of {len(names)} weight files are missing ({missing[0]}, ...)"
        return [model_dir / n for n in names]
    found = sorted(model_dir.glob("*.safetensors"))
    return found or "no weight files (*.safetensors)"


def model_dir_problem(model_dir: Path, *, check_sizes: bool = True) -> str | None:
    """None when model_dir holds a complete model vLLM can read; else one phrase saying what is
    missing or damaged. check_sizes also compares each safetensors file with its header."""
    if not (model_dir / "config.json").is_file():
        return "config.json is missing"
    weights = weight_files(model_dir)
    if isinstance(weights, str):
        return weights
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        return "no tokenizer files (tokenizer.json, tokenizer.model or vocab.json)"
    if check_sizes:
        for path in weights:
            problem = safetensors_problem(path)
            if problem:
                return problem
    return None


def repo_folder(repo_id: str, cache_dir: Path) -> Path:
    """huggingface_hub's folder for a model repository in the cache."""
    return cache_dir / ("models--" + repo_id.replace("/", "--"))


def _snapshot_complete(repo_id: str, snapshot: Path, cache_dir: Path) -> bool:
    """The snapshot holds the files a model needs and, when huggingface_hub recorded the repo's
    file list for this commit, every listed file we download."""
    if model_dir_problem(snapshot, check_sizes=False) is not None:
        return False
    from huggingface_hub import get_cached_repo_tree
    from huggingface_hub.errors import CachedRepoTreeNotFoundError
    from huggingface_hub.utils import filter_repo_objects

    try:
        listed = get_cached_repo_tree(repo_id, revision=snapshot.name, cache_dir=cache_dir)
    except (CachedRepoTreeNotFoundError, OSError, ValueError):
        return True  # downloaded by a client that keeps no file list: the structure must do
    wanted = filter_repo_objects([f.path for f in listed], allow_patterns=list(ALLOW_PATTERNS),
                                 ignore_patterns=list(IGNORE_PATTERNS))
    return all((snapshot / name).is_file() for name in wanted)


def cached_snapshot(repo_id: str, cache_dir: Path | None = None) -> Path | None:
    """The complete snapshot of repo_id in the Hugging Face cache (the one refs/main names, else the
    newest complete one), or None."""
    cache = cache_dir if cache_dir is not None else hf_cache_dir()
    folder = repo_folder(repo_id, cache)
    snapshots = folder / "snapshots"
    if not snapshots.is_dir():
        return None
    try:
        main = (folder / "refs" / "main").read_text().strip()
    except OSError:
        main = ""
    candidates = sorted(snapshots.iterdir(), key=lambda p: (p.name != main, -p.stat().st_mtime))
    for snapshot in candidates:
        if snapshot.is_dir() and _snapshot_complete(repo_id, snapshot, cache):
            return snapshot
    return None


def own_copy(repo_id: str, models_dir: Path) -> Path | None:
    """A complete copy of repo_id in vrampilot's models folder (<models_dir>/ORG/NAME), or None."""
    directory = models_dir.joinpath(*repo_id.split("/"))
    # Not written by huggingface_hub (a copy, an unpacked archive): check each file's length too.
    if directory.is_dir() and model_dir_problem(directory) is None:
        return directory
    return None


def find_repo(repo_id: str, models_dir: Path, cache_dir: Path | None = None) -> Path | None:
    """Where a complete copy of repo_id is: vrampilot's models folder first, then the HF cache."""
    return own_copy(repo_id, models_dir) or cached_snapshot(repo_id, cache_dir)


# --- other models on this machine ------------------------------------------------------------

@dataclass(frozen=True)
class FoundModel:
    """A model directory on this machine that no catalog entry names."""

    name: str  # the repository id (cache) or the folder name (models folder)
    path: Path
    origin: str  # "hf-cache" | "models-dir" | "added" (File > Add model directory)
    architecture: str
    quantization: str  # catalog vocabulary: none, fp8, awq, gptq
    size_bytes: int  # bytes of its weight files on disk

    @property
    def entry_id(self) -> str:
        return "local:" + self.name


def loadable_reason(model_dir: Path) -> tuple[str, str] | str:
    """(architecture, quantization) when vLLM can load the directory and the estimator can size
    it; else why not."""
    from core.models.estimator import architecture_from_config, read_config_json

    cfg = read_config_json(model_dir)
    if cfg is None:
        return "config.json is missing or unreadable"
    archs = cfg.get("architectures") or []
    arch = str(archs[0]) if archs else ""
    if not arch.endswith(("ForCausalLM", "ForConditionalGeneration")):
        return f"architecture {arch or 'unknown'} is not a text-generation model"
    qcfg = cfg.get("quantization_config")
    quantization = "none"
    if isinstance(qcfg, dict):
        method = str(qcfg.get("quant_method", ""))
        if method not in LOADABLE_QUANT_METHODS:
            return f"quantization {method or 'unknown'} cannot be sized here"
        quantization = method
    try:
        architecture_from_config(cfg, None)
    except (ValueError, TypeError) as exc:
        return str(exc)
    problem = model_dir_problem(model_dir)
    if problem:
        return problem
    return arch, quantization


def _weights_size(model_dir: Path) -> int:
    weights = weight_files(model_dir)
    return sum(p.stat().st_size for p in weights) if isinstance(weights, list) else 0


def _candidates(catalog: Catalog, models_dir: Path,
                cache_dir: Path) -> list[tuple[str, Path, str]]:
    """(name, directory, origin) of every model-like directory not claimed by a catalog entry."""
    claimed_repos = {e.hf_repo for e in catalog if e.hf_repo}
    claimed_dirs = {catalog.local_path(e).resolve() for e in catalog if not e.is_remote}
    out: list[tuple[str, Path, str]] = []
    if cache_dir.is_dir():
        from huggingface_hub import scan_cache_dir
        from huggingface_hub.errors import CacheNotFound

        try:
            info = scan_cache_dir(cache_dir)
        except (CacheNotFound, OSError):
            info = None
        for repo in sorted(info.repos if info else (), key=lambda r: r.repo_id):
            if repo.repo_type != "model" or repo.repo_id in claimed_repos:
                continue
            snapshot = cached_snapshot(repo.repo_id, cache_dir)
            if snapshot is not None:
                out.append((repo.repo_id, snapshot, "hf-cache"))
    if models_dir.is_dir():
        for config in sorted(models_dir.glob("*/config.json")) + sorted(
                models_dir.glob("*/*/config.json")):
            directory = config.parent
            name = directory.relative_to(models_dir).as_posix()
            if directory.resolve() in claimed_dirs or name in claimed_repos or \
                    name.startswith("."):
                continue
            out.append((name, directory, "models-dir"))
    from core.models.added_dirs import load_added_dirs

    seen = {d.resolve() for _, d, _ in out}
    for directory in load_added_dirs():
        if directory.resolve() not in claimed_dirs | seen:
            out.append((directory.name, directory, "added"))
    return out


def scan_other_models(catalog: Catalog, models_dir: Path, cache_dir: Path | None = None,
                      ) -> tuple[list[FoundModel], list[dict[str, Any]]]:
    """Models on this machine that vLLM can load and no catalog entry names, and the ones skipped
    (name, path, why)."""
    found: list[FoundModel] = []
    skipped: list[dict[str, Any]] = []
    cache = cache_dir if cache_dir is not None else hf_cache_dir()
    for name, directory, origin in _candidates(catalog, models_dir, cache):
        verdict = loadable_reason(directory)
        if isinstance(verdict, str):
            skipped.append({"name": name, "path": str(directory), "origin": origin,
                            "reason": verdict})
            continue
        arch, quant = verdict
        found.append(FoundModel(name, directory, origin, arch, quant, _weights_size(directory)))
    return found, skipped


def as_entry(found: FoundModel, template: ModelEntry, max_context_cap: int = 8192) -> ModelEntry:
    """A catalog entry that loads a found model: the estimator and vLLM read its own config.json
    (architecture, dtype, quantization); the template only fills the fields they do not."""
    from core.models.estimator import architecture_from_config, read_config_json

    cfg = read_config_json(found.path) or {}
    architecture = architecture_from_config(cfg, template.architecture)
    return template.model_copy(update={
        "id": found.entry_id, "display_name": found.name, "path": found.path.resolve(),
        "priority": "CUSTOM", "quantization": found.quantization, "hf_repo": None,
        "architecture": architecture, "expected_tokens_per_s": None,
        "default_context": min(architecture.max_position, max_context_cap)})


def with_models_on_disk(catalog: Catalog, models_dir: Path,
                        cache_dir: Path | None = None) -> Catalog:
    """The catalog plus an entry ("local:NAME") for each other model on this machine vLLM can
    load, so the Models tab, `generate --model` and the manager load them like any entry."""
    template = next((e for e in catalog if e.engine == "vllm"), None)
    if template is None:
        return catalog
    found, _skipped = scan_other_models(catalog, models_dir, cache_dir)
    for model in found:
        try:
            catalog = catalog.with_entry(as_entry(model, template))
        except (ValueError, TypeError):
            continue  # sized by loadable_reason already; a config that still fails is skipped
    return catalog
