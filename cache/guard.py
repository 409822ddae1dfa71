"""The false-hit guard of the semantic cache: two prompts may share an answer only if they say the same.

Embeddings score "is X safe" vs "is X not safe" or "convert A to B" vs "convert B to A"
at 0.99 cosine, so similarity alone cannot decide. This guard compares the prompts'
words instead: numbers, negations and the content words (named entities included) must
match, in the same order up to one swap of neighbours. Only wording that rarely changes
an answer may differ: case, punctuation, contractions, inflections, articles, question
frames ("can you tell me", "how do I" / "how to") and a few filler words.
It errs on the side of a miss: a miss costs one generation, a false hit a wrong answer.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from typing import Optional

# Contractions are spelled out first, so that their "not" counts as a negation.
CONTRACTIONS = tuple((re.compile(pattern), replacement) for pattern, replacement in (
    (r"\bwon't\b", "will not"), (r"\bcan't\b", "can not"), (r"\bshan't\b", "shall not"),
    (r"n't\b", " not"), (r"'re\b", " are"), (r"'m\b", " am"), (r"'ll\b", " will"),
    (r"'ve\b", " have"), (r"'d\b", " would"), (r"'s\b", ""),
    (r"\bcannot\b", "can not"), (r"\bim\b", "i am"), (r"\bwhats\b", "what is"), (r"\bdont\b", "do not"),
    (r"\bdoesnt\b", "does not"), (r"\bisnt\b", "is not"), (r"\bcant\b", "can not"), (r"\bwont\b", "will not"),
))
# Ways of asking that carry no content; removed as whole phrases.
FRAMES = (
    "can you please", "could you please", "would you please", "can you", "could you", "would you",
    "will you", "i would like to know", "i want to know", "i need to know", "do you know", "i wonder",
    "let me know", "tell me", "give me", "show me", "help me", "please", "kindly",
)
# "how to X" and "how do I X" ask the same; "how do you X" may be about the reader, so it stays.
QUESTION_FORMS = (("how can i", "how i"), ("how do i", "how i"), ("how to", "how i"))
FILLER = frozenset(
    "a an the of for and is are am be been being do does can could would what which that this these those "
    "it its there so just really actually exactly our me hi hey hello".split()
)
NEGATIONS = frozenset("not no never none nobody nothing neither nor without".split())
UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
NUMBER_WORDS = {**{w: i for i, w in enumerate(UNITS)}, **{w: 10 * i for i, w in enumerate(TENS, 2)}}
SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
SYNONYMS = {"percent": "%", "per cent": "%"}
# Frames, question forms and synonyms in one pass; longer phrases first, whole words only.
REWRITES = {**dict.fromkeys(FRAMES, ""), **dict(QUESTION_FORMS), **SYNONYMS}
REWRITE = re.compile(
    r"(?<!\S)(?:" + "|".join(re.escape(p) for p in sorted(REWRITES, key=len, reverse=True)) + r")(?!\S)"
)
TOKEN = re.compile(
    r"\d+(?:[.,]\d+)*(?:st|nd|rd|th)?"          # numbers, 1,000 and 3.5 and 21st
    r"|[^\W\d_][\w]*(?:[.'\-][\w]+)*(?:\+\+|#)?"  # words, node.js, e-mail, c++, c#
    r"|[%$€£°+\-*/^=<>]"                        # symbols that change a question's meaning
)


@dataclass(frozen=True)
class PromptSignature:
    """What the guard compares: numbers in order, how many negations, and content words in order."""

    numbers: tuple[str, ...]
    negations: int
    content: tuple[str, ...]


def signature(prompt: str) -> PromptSignature:
    """Reduce a prompt to the parts that decide its answer."""
    text = unicodedata.normalize("NFKC", prompt).replace("\u2019", "'").casefold()
    for pattern, replacement in CONTRACTIONS:
        text = pattern.sub(replacement, text)
    words = REWRITE.sub(lambda match: REWRITES[match.group()], " ".join(TOKEN.findall(text)))
    numbers, negations, content = [], 0, []
    for token, value in _merge_number_words(words.split()):
        if value is not None:
            numbers.append(value)
        elif token in NEGATIONS:
            negations += 1
        elif token not in FILLER:
            content.append(_stem(token))
    return PromptSignature(tuple(numbers), negations, tuple(content))


def mismatch(prompt: str, cached_prompt: str) -> Optional[str]:
    """Why `cached_prompt`'s answer must not serve `prompt`, or None when it may."""
    a, b = signature(prompt), signature(cached_prompt)
    if a.numbers != b.numbers:
        return "numbers"
    if a.negations != b.negations:
        return "negation"
    if not a.content or Counter(a.content) != Counter(b.content):
        return "content"
    if not _same_order(a.content, b.content):
        return "order"
    return None


def _same_order(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Equal, or equal after swapping one pair of neighbours ("largest ocean" / "ocean ... largest")."""
    differing = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    return not differing or (
        len(differing) == 2 and differing[1] == differing[0] + 1
        and a[differing[0]] == b[differing[1]] and a[differing[1]] == b[differing[0]]
    )


def _merge_number_words(tokens: list[str]) -> list[tuple[str, Optional[str]]]:
    """Pair each token with its numeric value (None for words); "twenty five" becomes one 25."""
    merged: list[tuple[str, Optional[str]]] = []
    total, current, in_number = 0, 0, False
    for token in [*tokens, ""]:
        digits = re.fullmatch(r"(\d+(?:[.,]\d+)*)(?:st|nd|rd|th)?", token)
        if token in NUMBER_WORDS or (token in SCALES and in_number):
            current = current + NUMBER_WORDS[token] if token in NUMBER_WORDS else max(current, 1) * SCALES[token]
            if token in SCALES and SCALES[token] >= 1000:
                total, current = total + current, 0
            in_number = True
            continue
        if in_number:
            merged.append(("#", str(total + current)))
            total, current, in_number = 0, 0, False
        if digits:
            merged.append((token, _canonical_number(digits.group(1))))
        elif token:
            merged.append((token, None))
    return merged


def _canonical_number(text: str) -> str:
    """1,000 -> 1000 and 3.50 -> 3.5; a lone comma group like 3,5 is read as 3.5."""
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?", text):
        text = text.replace(",", "")
    text = text.replace(",", ".")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text.lstrip("0") or "0"


def _stem(word: str) -> str:
    """A light suffix stripper, enough to equate "refrigerators work" and "refrigerator works"."""
    if len(word) <= 3 or not word.isalpha():
        return word
    for suffix, replacement in (("ies", "y"), ("sses", "ss"), ("ing", ""), ("ed", ""), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "s" and word.endswith(("ss", "us", "is")):
                break
            word = word[: -len(suffix)] + replacement
            break
    return word[:-1] if word.endswith("e") and len(word) > 4 else word
