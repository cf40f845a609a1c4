"""Count a chat's prompt tokens with the model's own tokenizer and chat template.

Blocking (loading a tokenizer takes up to seconds, importing transformers longer): front ends call
it off their event loop. Tokenizers are kept per model directory.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from core.engine.base import ChatMessage


class PromptCounter:
    def __init__(self) -> None:
        self._tokenizers: dict[Path, Any] = {}
        self._lock = threading.Lock()

    def count(self, model_dir: Path, messages: tuple[ChatMessage, ...],
              thinking: bool | None = None) -> int:
        """Tokens of the prompt the engine would render (chat template, generation prompt)."""
        tokenizer = self._tokenizer(model_dir)
        options = {} if thinking is None else {"enable_thinking": thinking}
        chat = [{"role": m.role, "content": m.content} for m in messages]
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(chat, tokenize=False,
                                                 add_generation_prompt=True, **options)
        else:  # a base model without a template: the engine would need one too
            text = "\n".join(m.content for m in messages)
        return len(tokenizer.encode(text, add_special_tokens=False))

    def _tokenizer(self, model_dir: Path) -> Any:
        with self._lock:
            found = self._tokenizers.get(model_dir)
            if found is None:
                from transformers import AutoTokenizer

                found = AutoTokenizer.from_pretrained(str(model_dir), trust_remote_code=False)
                self._tokenizers[model_dir] = found
            return found
