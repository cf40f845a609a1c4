"""The streaming <think> splitter, fed whole and in every possible chunking."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from core.engine.thinking import SplitText, ThinkingSplitter


def run(chunks: list[str], start_in_thinking: bool = False) -> SplitText:
    splitter = ThinkingSplitter(start_in_thinking)
    thinking, text = [], []
    for chunk in chunks:
        part = splitter.feed(chunk)
        thinking.append(part.thinking)
        text.append(part.text)
    rest = splitter.flush()
    return SplitText("".join(thinking) + rest.thinking, "".join(text) + rest.text)


def test_plain_answer_passes_through() -> None:
    assert run(["Hello ", "world <b>"]) == SplitText("", "Hello world <b>")


def test_qwen3_block_is_separated() -> None:
    out = run(["<think>\nweigh options\n</think>\n\nThe answer is 4."])
    assert out == SplitText("weigh options\n", "The answer is 4.")


def test_tags_split_across_deltas() -> None:
    out = run(["<th", "ink>", "\n", "why", "</th", "in", "k>", "\n", "\n", "so"])
    assert out == SplitText("why", "so")


def test_prompt_opened_the_block() -> None:
    out = run(["reason</think>\n\nanswer"], start_in_thinking=True)
    assert out == SplitText("reason", "answer")


def test_unfinished_block_is_thinking() -> None:
    assert run(["<think>still going <"]) == SplitText("still going <", "")


def test_a_partial_tag_is_held_until_it_cannot_be_a_tag() -> None:
    splitter = ThinkingSplitter()
    assert splitter.feed("a <thi") == SplitText("", "a ")
    assert splitter.feed("s") == SplitText("", "<this")


def test_only_one_block_per_reply() -> None:
    out = run(["<think>x</think>y <think>z</think>"])
    assert out == SplitText("x", "y <think>z</think>")


def test_newlines_in_the_answer_are_kept() -> None:
    assert run(["<think>a</think>\n\nline1\n\nline2"]) == SplitText("a", "line1\n\nline2")


@given(st.lists(st.integers(min_value=0, max_value=60), max_size=8),
       st.sampled_from([
           "<think>\nplan: a, b\n</think>\n\nresult <x> ok",
           "no reasoning at all <thinking> here",
           "<think>never closed <",
           "pre<think>mid</think>post</think>",
       ]))
def test_any_chunking_gives_the_same_split(cuts: list[int], text: str) -> None:
    points = sorted({min(c, len(text)) for c in cuts})
    chunks, last = [], 0
    for p in points:
        chunks.append(text[last:p])
        last = p
    chunks.append(text[last:])
    assert run(chunks) == run([text])
