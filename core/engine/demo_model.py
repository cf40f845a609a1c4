"""A tiny randomly initialised Qwen3 built locally, so every engine path runs with no download.

The model's text is noise; it exists so that load, stream, switch and unload run for real on any
machine. Built deterministically from a seed: the same seed gives the same bytes on disk.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

from core import paths
from core.engine.base import ModelDirectoryError
from core.engine.model_dir import check_model_dir

DEMO_FORMAT_VERSION = 1
MARKER_FILE = "vrampilot-demo.json"
# What every front end says while a demo model is active (and its marker file says too).
DEMO_NOTICE = "Demo model: random weights, so the text it writes is noise, not an answer."


@dataclasses.dataclass(frozen=True)
class DemoShape:
    """The architecture of one demo model. head_dim stays 64: vLLM's CPU attention rejects 16."""

    hidden: int = 128
    intermediate: int = 256
    layers: int = 2
    heads: int = 2
    kv_heads: int = 1


TINY = DemoShape()
# Larger than the tiny ones (more layers, wider, more KV heads: ~4x the weights and KV cache), so
# an alert has a smaller model to step down to; still a few MB and as quick to load.
SMALL = DemoShape(hidden=256, intermediate=512, layers=4, heads=4, kv_heads=2)
# name, seed, shape; the catalog (resources/models.yaml) has an entry for each.
DEMO_MODELS: tuple[tuple[str, int, DemoShape], ...] = (
    ("demo-small", 2, SMALL), ("demo-tiny-a", 0, TINY), ("demo-tiny-b", 1, TINY))

# Qwen3's chat template, reduced to text chat: the empty think block when thinking is off is what
# makes Qwen3 answer directly; assistant turns in history drop their reasoning like upstream.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' and '</think>' in message['content'] %}"
    "{{- message['content'].split('</think>')[-1].lstrip('\\n') }}"
    "{%- else %}"
    "{{- message['content'] }}"
    "{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Like Qwen3's, the think tags are ordinary added tokens: skip_special_tokens keeps them.
THINK_TOKENS = ("<think>", "</think>")
VOCAB_SIZE = 512

_CORPUS = """\
The quick brown fox jumps over the lazy dog. A laptop GPU has sixteen gigabytes of memory.
Large language models generate text one token at a time. The key and value cache grows with context.
Temperature, power and memory are watched every second; a model is switched when it is safe.
def add(a, b):\n    return a + b\nfor i in range(10):\n    print(i)\n
Salary: 120,000 USD per year, equity and stock options, remote or hybrid work in Berlin.
<table><tr><td>name</td><td>value</td></tr></table> {"role": "user", "content": "hello"}
Question: what is two plus two? Answer: four. Let me think step by step about the problem.
First, read the job posting. Second, extract the title, the company and the location.
The engine streams deltas; the first token arrives quickly and the rest follow at a steady rate.
0123456789 +-*/=<>()[]{}:;,.!?'" @#$%^&_~ |\\ newline\ttab
"""


def _corpus_lines() -> list[str]:
    lines = [line for line in _CORPUS.splitlines() if line.strip()]
    chat = [f"<|im_start|>user\n{line}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
            f"{line}<|im_end|>" for line in lines]
    return lines * 20 + chat * 5


def _build_tokenizer(target: Path) -> None:
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(THINK_TOKENS),
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus_lines(), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        model_max_length=4096,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(target))
    if len(fast) != VOCAB_SIZE:  # the model's embedding must cover every id the tokenizer emits
        raise RuntimeError(f"demo tokenizer has {len(fast)} tokens, expected {VOCAB_SIZE}")


def _build_weights(target: Path, seed: int, eos_id: int, pad_id: int,
                   shape: DemoShape = TINY) -> None:
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(
        vocab_size=VOCAB_SIZE,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        # vLLM's CPU attention rejects head_dim 16 ("Unsupported CPU attention configuration").
        head_dim=64,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        eos_token_id=eos_id,
        pad_token_id=pad_id,
        bos_token_id=None,
        # float32 on disk; vLLM's CPU backend would downcast "auto" to bfloat16, which crashed the
        # worker with SIGILL on the build machine, so the engine keeps a float32 checkpoint float32.
        dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    model.save_pretrained(str(target), safe_serialization=True)
    GenerationConfig(eos_token_id=eos_id, pad_token_id=pad_id).save_pretrained(str(target))


def build_demo_model(path: Path, seed: int = 0, name: str = "demo-tiny",
                     shape: DemoShape = TINY) -> Path:
    """Build the tiny Qwen3 at path (replacing what is there) and return path.

    Deterministic: the same seed gives byte-identical files. Written into a sibling temp dir and
    renamed into place so a crash never leaves a half-built model that looks complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        _build_tokenizer(tmp)
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(tmp))
        eos_id = int(tok.convert_tokens_to_ids("<|im_end|>"))  # type: ignore[arg-type]
        pad_id = int(tok.convert_tokens_to_ids("<|endoftext|>"))  # type: ignore[arg-type]
        _build_weights(tmp, seed, eos_id, pad_id, shape)
        marker = {"name": name, "seed": seed, "format": DEMO_FORMAT_VERSION,
                  "note": DEMO_NOTICE}
        if shape != TINY:
            marker["shape"] = dataclasses.asdict(shape)
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=1, sort_keys=True) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private; a model dir is ordinary data
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _is_built(path: Path, seed: int, shape: DemoShape = TINY) -> bool:
    try:
        marker = json.loads((path / MARKER_FILE).read_text())
        check_model_dir(path)
    except (OSError, ValueError, ModelDirectoryError):
        return False
    built_shape = marker.get("shape")
    wanted = None if shape == TINY else dataclasses.asdict(shape)
    return bool(marker.get("seed") == seed and marker.get("format") == DEMO_FORMAT_VERSION
                and built_shape == wanted)


def ensure_demo_models(root: Path | None = None) -> list[Path]:
    """Build the demo models (DEMO_MODELS: demo-small, demo-tiny-a, demo-tiny-b) under the models
    dir unless present."""
    base = root if root is not None else paths.models_dir()
    out = []
    for name, seed, shape in DEMO_MODELS:
        target = base / name
        if not _is_built(target, seed, shape):
            build_demo_model(target, seed=seed, name=name, shape=shape)
        out.append(target)
    return out
