"""The model catalog: which models exist, how they are quantized, which engine loads them.

Defaults come from resources/models.yaml (`models:`); a user file may override fields of an entry or
add entries, merged by id. Entries are frozen pydantic models; the `Catalog` is immutable.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from core import paths
from core.config_loading import ConfigError, deep_merge, describe_error, read_yaml

Engine = Literal["vllm", "llama.cpp", "remote"]
Mode = Literal["instruct", "thinking", "base"]
Quantization = Literal[
    "none", "fp32", "fp16", "bf16", "fp8", "awq", "gptq", "q4_k_m", "q5_k_m", "q6_k", "q8_0"
]

# Quantizations whose files are GGUF: only llama.cpp loads them here.
GGUF_QUANTIZATIONS = frozenset({"q4_k_m", "q5_k_m", "q6_k", "q8_0"})


class UnknownModelError(KeyError):
    """A model id that is not in the catalog; the message lists the known ids."""

    def __init__(self, model_id: str, known: tuple[str, ...]) -> None:
        self.model_id = model_id
        self.known = known
        super().__init__(model_id)

    def __str__(self) -> str:
        return f"unknown model {self.model_id!r}; known models: {', '.join(self.known)}"


class Architecture(BaseModel):
    """The transformer shape the estimator needs (Qwen3 config.json names in comments)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    layers: int  # num_hidden_layers
    q_heads: int  # num_attention_heads
    kv_heads: int  # num_key_value_heads
    head_dim: int
    hidden: int  # hidden_size
    params_total: float
    params_active: float
    tied_embeddings: bool  # tie_word_embeddings
    vocab: int  # vocab_size
    max_position: int  # max_position_embeddings: the longest context the model supports
    intermediate: int | None = None  # intermediate_size (dense MLP)
    num_experts: int | None = None
    experts_per_token: int | None = None
    moe_intermediate: int | None = None

    @model_validator(mode="after")
    def _positive(self) -> Architecture:
        for name in ("layers", "q_heads", "kv_heads", "head_dim", "hidden", "vocab",
                     "max_position"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        if self.params_total <= 0 or self.params_active <= 0:
            raise ValueError("params_total and params_active must be positive")
        return self

    @property
    def embedding_params(self) -> float:
        """Input embeddings plus the lm_head when it is not tied to them."""
        one = float(self.vocab * self.hidden)
        return one if self.tied_embeddings else 2.0 * one


class ModelEntry(BaseModel):
    """One catalog entry. `id` is the key it has under `models:`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    display_name: str
    quantization: Quantization
    mode: Mode
    priority: str
    engine: Engine
    hf_repo: str | None = None
    expected_tokens_per_s: tuple[float, float] | None = None
    trust_remote_code: bool = False
    default_context: int | None = None
    architecture: Architecture | None = None
    path: Path | None = None  # local directory; default <models_dir>/<id>
    enabled: bool = True
    base_url: str | None = None  # remote only
    remote_model: str | None = None  # remote only: the served model name
    # vLLM's enforce_eager for this model (core.engine.base.LoadSpec): true skips compilation
    # and CUDA graphs (a faster load, a slower decode); null: the engine's default for the device.
    enforce_eager: bool | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelEntry:
        if self.engine != "remote":
            if self.architecture is None:
                raise ValueError("a local model needs `architecture`")
            if self.default_context is None or self.default_context <= 0:
                raise ValueError("a local model needs a positive `default_context`")
        if self.quantization in GGUF_QUANTIZATIONS and self.engine == "vllm":
            raise ValueError(f"{self.quantization} is a GGUF quantization: vLLM cannot load it "
                             "here; set engine: llama.cpp")
        if self.expected_tokens_per_s is not None:
            low, high = self.expected_tokens_per_s
            if not 0 < low <= high:
                raise ValueError("expected_tokens_per_s must be [low, high] with 0 < low <= high")
        return self

    @property
    def is_remote(self) -> bool:
        return self.engine == "remote"

    @property
    def is_gguf(self) -> bool:
        return self.quantization in GGUF_QUANTIZATIONS

    @property
    def vllm_quantization(self) -> str | None:
        """The value for vLLM's `quantization` argument (None: unquantized)."""
        return self.quantization if self.quantization in ("fp8", "awq", "gptq") else None

    @property
    def vllm_dtype(self) -> str:
        """The value for vLLM's `dtype` argument."""
        return {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}.get(
            self.quantization, "auto")


@dataclass(frozen=True)
class Catalog:
    """Every known model, immutable. Look up with `get(id)`; iterate `entries`.

    models_dir: where entries without an explicit `path` live; None means core.paths.models_dir()
    at the time of the call (so VRAMPILOT_DATA_DIR set later still applies).
    """

    entries: tuple[ModelEntry, ...]
    models_dir: Path | None = None
    sources: tuple[str, ...] = ()
    _by_id: Mapping[str, ModelEntry] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        by_id = {e.id: e for e in self.entries}
        if len(by_id) != len(self.entries):
            raise ValueError("duplicate model ids in catalog")
        object.__setattr__(self, "_by_id", MappingProxyType(by_id))

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(e.id for e in self.entries)

    def get(self, model_id: str) -> ModelEntry:
        """The entry for model_id, or UnknownModelError listing the known ids."""
        try:
            return self._by_id[model_id]
        except KeyError:
            raise UnknownModelError(model_id, self.ids) from None

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._by_id

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def local_path(self, entry: ModelEntry) -> Path:
        """The entry's directory: its `path`, else <models_dir>/<id>, else (when that is absent)
        a complete copy of its `hf_repo` in <models_dir>/ORG/NAME or the Hugging Face cache."""
        if entry.path is not None:
            return entry.path.expanduser()
        base = self.models_dir if self.models_dir is not None else paths.models_dir()
        own = base / entry.id
        if entry.hf_repo and not entry.is_gguf and not own.exists():
            from core.models.on_disk import find_repo

            found = find_repo(entry.hf_repo, base)
            if found is not None:
                return found
        return own

    def is_on_disk(self, entry: ModelEntry) -> bool:
        """True when the entry's directory holds a config.json (or, for GGUF, a .gguf file)."""
        if entry.is_remote:
            return False
        directory = self.local_path(entry)
        if entry.is_gguf:
            if directory.suffix == ".gguf":
                return directory.is_file()
            return directory.is_dir() and any(directory.glob("*.gguf"))
        return (directory / "config.json").is_file()

    def with_entry(self, entry: ModelEntry) -> Catalog:
        """A copy with entry added or replacing the one with its id."""
        entries = [entry if e.id == entry.id else e for e in self.entries]
        if entry.id not in self._by_id:
            entries.append(entry)
        return Catalog(tuple(entries), self.models_dir, self.sources)


def default_models_file() -> Path:
    return paths.resource("models.yaml")


def merge_sections(defaults: Mapping[str, Any] | None,
                   overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """Deep-merge a user section over the defaults (mappings merge key by key)."""
    return deep_merge(defaults or {}, overrides or {})


def key_origin(key_path: tuple[str | int, ...], overrides: Mapping[str, Any] | None,
               defaults_path: Path | str, overrides_path: Path | str | None,
               min_depth: int = 2) -> str:
    """Which file set the value at key_path (relative to a section such as `router:`).

    The user's file when it holds the whole path, or at least min_depth levels of it (a mapping or
    list it replaced wholesale); otherwise the defaults file.
    """
    if overrides is None or overrides_path is None:
        return str(defaults_path)
    node: Any = overrides
    depth = 0
    for part in key_path:
        in_mapping = isinstance(node, Mapping) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if not (in_mapping or in_list):
            break
        node = node[part]
        depth += 1
    if depth == len(key_path) or depth >= min_depth:
        return str(overrides_path)
    return str(defaults_path)


def build_catalog(models: Mapping[str, Any], *, defaults_path: Path | str,
                  user_models: Mapping[str, Any] | None = None,
                  user_path: Path | str | None = None,
                  models_dir: Path | None = None) -> Catalog:
    """Validate the (merged) `models:` mapping into a Catalog; errors name the file and key."""
    merged = merge_sections(models, user_models)
    entries: list[ModelEntry] = []
    for model_id, spec in merged.items():
        if not isinstance(spec, Mapping):
            path = key_origin((model_id,), user_models, defaults_path, user_path)
            raise ConfigError(path, f"models.{model_id}",
                              f"expected a mapping of fields, got {type(spec).__name__}")
        if "id" in spec and spec["id"] != model_id:
            path = key_origin((model_id, "id"), user_models, defaults_path, user_path)
            raise ConfigError(path, f"models.{model_id}.id",
                              "must equal the entry's key (or be left out)")
        try:
            entries.append(ModelEntry.model_validate({**spec, "id": model_id}))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = tuple(err["loc"])
            # Don't blame the user's file for a field it never touched.
            in_user = user_models is not None and model_id in user_models and (
                not loc or loc[0] in user_models[model_id] or err["type"] == "missing"
                or model_id not in models)
            path = str(user_path) if in_user and user_path is not None else str(defaults_path)
            key = ".".join(["models", str(model_id), *(str(p) for p in loc)])
            raise ConfigError(path, key, describe_error(err)) from None
    sources = (str(defaults_path),) + ((str(user_path),) if user_path and user_models else ())
    return Catalog(tuple(entries), models_dir, sources)


def load_catalog(user_models: Mapping[str, Any] | None = None,
                 user_path: Path | str | None = None, *,
                 defaults_path: Path | str | None = None,
                 models_dir: Path | None = None) -> Catalog:
    """The catalog from resources/models.yaml with the user's `models:` section merged by id."""
    dpath = Path(defaults_path) if defaults_path is not None else default_models_file()
    data = read_yaml(dpath)
    models = data.get("models")
    if not isinstance(models, Mapping):
        raise ConfigError(dpath, "models", "expected a mapping of model id -> fields")
    if user_models is not None and not isinstance(user_models, Mapping):
        raise ConfigError(user_path or "<user config>", "models",
                          "expected a mapping of model id -> fields")
    return build_catalog(models, defaults_path=dpath, user_models=user_models,
                         user_path=user_path, models_dir=models_dir)
