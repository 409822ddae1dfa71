"""A Hugging Face tokenizer for engines that do not run MLX: chat template, EOS ids and streaming text.

`ChatTokenizer` offers what the batch loop (engines.threaded) uses of mlx-lm's
`TokenizerWrapper`, on `transformers` alone: the same `AutoTokenizer` that
mlx-lm's `load_tokenizer` loads, and the same chat template call, so the
llama.cpp engine builds the same prompt token ids as the MLX engine without
importing MLX. `StreamingDetokenizer` turns a request's tokens into text
pieces as they come.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

REPLACEMENT = "\ufffd"  # what decoding gives for the bytes of a character not yet complete


class StreamingDetokenizer:
    """The text of a token stream, piece by piece; a piece never ends inside a character.

    The pieces add up to exactly `decode(all tokens)`. Each step decodes a short
    window instead of the whole answer: the tokens since the last piece but one.
    The new text is what the window decodes to beyond the text of its already
    emitted tokens, decoded from the same start, so decoders that treat the
    first token specially (a stripped leading space) still add up. A window
    whose text ends in U+FFFD stops inside a character split across tokens: its
    text waits for the next token (or `finalize`).
    """

    def __init__(self, decode: Callable[[list[int]], str]) -> None:
        self._decode = decode
        self._window: list[int] = []
        self._settled = 0  # the window's first tokens whose text has been emitted
        self._settled_text = ""  # their text, decoded from the window's start
        self._unread = ""  # emitted text that last_segment has not handed out yet

    def add_token(self, token: int) -> None:
        self._window.append(token)
        text = self._decode(self._window)
        if not text.endswith(REPLACEMENT):
            self._emit(text)

    def finalize(self) -> None:
        """Emit what is held back (an incomplete character at the very end stays U+FFFD, as decode gives it)."""
        if len(self._window) > self._settled:
            self._emit(self._decode(self._window))

    @property
    def last_segment(self) -> str:
        """The text emitted since the last time this was read."""
        segment, self._unread = self._unread, ""
        return segment

    def _emit(self, text: str) -> None:
        self._unread += text[len(self._settled_text):]
        # The tokens just emitted start the next window: it begins on a character boundary.
        self._window = self._window[self._settled:]
        self._settled = len(self._window)
        self._settled_text = self._decode(self._window)


class ChatTokenizer:
    """A tokenizer folder (`tokenizer.json`, `tokenizer_config.json`) loaded with transformers."""

    def __init__(self, folder: Path) -> None:
        from transformers import AutoTokenizer

        self._tokenizer = AutoTokenizer.from_pretrained(str(folder))
        # Decoding goes straight to the Rust tokenizer: transformers' decode adds per-call work
        # (and only a clean-up of spaces, which these folders turn off), for every generated token.
        self._backend = self._tokenizer.backend_tokenizer
        self.chat_template = self._tokenizer.chat_template
        self.eos_token_ids = frozenset({self._tokenizer.eos_token_id} - {None})

    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        """Token ids of the chat-templated conversation, as mlx-lm's TokenizerWrapper gives them."""
        return list(self._tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=False))

    def encode(self, text: str) -> list[int]:
        return self._tokenizer.encode(text)

    def decode(self, tokens: list[int]) -> str:
        """The text of `tokens`, special tokens included (as `tokenizer.decode(tokens)` gives it)."""
        return self._backend.decode(tokens, skip_special_tokens=False)

    @property
    def detokenizer(self) -> StreamingDetokenizer:
        """A new streaming detokenizer, for one request."""
        return StreamingDetokenizer(self.decode)
