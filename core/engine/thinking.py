"""Split Qwen3-style ``<think>...</think>`` reasoning from the answer while text streams in.

Tags can arrive split across deltas (``"<thi"`` then ``"nk>"``), so the splitter holds back a tail
that could still become a tag and releases it once it cannot.
"""

from __future__ import annotations

from dataclasses import dataclass

OPEN_TAG = "<think>"
CLOSE_TAG = "</think>"


@dataclass(frozen=True)
class SplitText:
    """One piece of streamed output: reasoning and answer text (either may be empty)."""

    thinking: str = ""
    text: str = ""


def _partial_tag_suffix(buffer: str, tag: str) -> int:
    """Length of the longest suffix of buffer that is a proper prefix of tag."""
    for n in range(min(len(buffer), len(tag) - 1), 0, -1):
        if buffer.endswith(tag[:n]):
            return n
    return 0


class ThinkingSplitter:
    """Streaming parser. feed() each delta, then flush() once at the end.

    start_in_thinking: the prompt already opened the block (Qwen3 thinking-2507 templates end the
    prompt with ``<think>``), so output is reasoning until ``</think>``.
    """

    def __init__(self, start_in_thinking: bool = False) -> None:
        self._in_thinking = start_in_thinking
        self._seen_close = False
        self._pending = ""
        # Qwen3 writes "<think>\n" and "</think>\n\n": drop newlines right after a tag, even when
        # they arrive in a later delta.
        self._strip_newlines = start_in_thinking

    @property
    def in_thinking(self) -> bool:
        return self._in_thinking

    def feed(self, chunk: str) -> SplitText:
        """Consume one delta; return what can be released now."""
        buffer = self._pending + chunk
        thinking: list[str] = []
        text: list[str] = []
        while buffer:
            if self._strip_newlines:
                buffer = buffer.lstrip("\n")
                if not buffer:
                    break
                self._strip_newlines = False
            tag = CLOSE_TAG if self._in_thinking else OPEN_TAG
            out = thinking if self._in_thinking else text
            if not self._in_thinking and self._seen_close:
                # One reasoning block per reply: a later "<think>" is answer text.
                out.append(buffer)
                buffer = ""
                break
            idx = buffer.find(tag)
            if idx >= 0:
                out.append(buffer[:idx])
                buffer = buffer[idx + len(tag):]
                self._seen_close = self._seen_close or self._in_thinking
                self._in_thinking = not self._in_thinking
                self._strip_newlines = True
                continue
            hold = _partial_tag_suffix(buffer, tag)
            out.append(buffer[: len(buffer) - hold])
            buffer = buffer[len(buffer) - hold:]
            break
        self._pending = buffer
        return SplitText("".join(thinking), "".join(text))

    def flush(self) -> SplitText:
        """Release what was held back at the end of the stream."""
        rest, self._pending = self._pending, ""
        return SplitText(rest, "") if self._in_thinking else SplitText("", rest)
