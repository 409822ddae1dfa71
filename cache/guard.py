"""The false-hit guard of the semantic cache: two prompts may share an answer only if they ask the same.

Embeddings score "is X safe" / "is X not safe" or "convert A to B" / "convert B to A" at 0.99
cosine, so similarity alone cannot decide; yet a guard that wants every word back in the same
order never lets a paraphrase through. The rule, applied after the similarity threshold:

1. Numbers agree, in order (digits, "1,000", "twenty five", "ten-year-old").
2. Negations agree in count ("not", "n't", "no", "never", "without", ...), and so does the tense
   that auxiliaries mark ("is" / "was" / "will").
3. The sets of content words agree. Content is every word but function words (articles,
   auxiliaries, "what"/"which", "my", most prepositions), question frames ("can you tell me",
   "how do I" / "how can I" / "how to", a leading "I need"), "explain"/"define"/"meaning" and a
   few request verbs at the start ("list", "give").
   Synonyms are mapped to one word first ("repo"/"repository", "biggest"/"largest", "author
   of"/"wrote", "what year"/"when"), plurals and verb endings are stripped, and a noun that only
   names the kind of answer ("which *city* is the capital of France") is dropped. So named
   entities, libraries, units, time periods, pronouns and wh-words ("who", "when") must be the
   same, and so must direction words (up/down, left/right, increase/decrease, before/after,
   min/max, from, out, off, import/export, encrypt/decrypt ...): each of them is content.
4. Word order may change, except across a shared word: when two words swap sides, no word that
   both prompts have may stand between them in both ("celsius *to* fahrenheit", "sun *orbit*
   earth", "crocodile *faster than* hippo" stay apart). Prompts that repeat a content word
   keep their order as a whole; "who killed X" / "who did X kill" is told apart by its "did".

What may differ is what rarely changes an answer: case, punctuation, contractions, inflection,
function words, the listed synonyms and frames, and word order. It errs on the side of a miss:
a miss costs one generation, a false hit a wrong answer.
"""
from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from itertools import combinations
from typing import Optional

# Contractions are spelled out first, so that their "not" counts as a negation.
CONTRACTIONS = tuple((re.compile(pattern), replacement) for pattern, replacement in (
    (r"\bwon't\b", "will not"), (r"\bcan't\b", "can not"), (r"\bshan't\b", "shall not"),
    (r"n't\b", " not"), (r"'re\b", " are"), (r"'m\b", " am"), (r"'ll\b", " will"),
    (r"'ve\b", " have"), (r"'d\b", " would"),
    (r"\b(what|where|when|who|why|how|it|that|there|here)'s\b", r"\1 is"), (r"'s\b", ""),
    (r"\bcannot\b", "can not"), (r"\bim\b", "i am"), (r"\bwhats\b", "what is"), (r"\bdont\b", "do not"),
    (r"\bdoesnt\b", "does not"), (r"\bisnt\b", "is not"), (r"\bcant\b", "can not"), (r"\bwont\b", "will not"),
))
# Upper-case "US" is the country, not the pronoun: told apart before case is folded.
COUNTRY_US = re.compile(r"\bU\.?S\.?(?:A\.?)?(?![\w.])")
# Ways of asking that carry no content; removed as whole phrases.
FRAMES = (
    "can you please", "could you please", "would you please", "can you", "could you", "would you",
    "will you", "i would like to know", "i want to know", "i need to know", "do you know", "i wonder",
    "let me know", "tell me", "give me", "show me", "help me", "please", "kindly", "in the world", "the word",
)
# Ways of asking how to do something ("how do I X" asks what "X" asks); "how do you X" may be
# about the reader ("how do you feel"), so only set verbs join.
QUESTION_FORMS = {
    **dict.fromkeys(("how can i", "how do i", "how to", "how should i", "what can i do to", "what should i do to",
                     "what is the best way to"), ""),
    **{f"how do you {verb}": verb for verb in (
        "say", "spell", "pronounce", "write", "make", "cook", "calculate", "convert", "install", "use")},
    "in what year": "when", "what year": "when", "which year": "when", "what date": "when",
    "which place": "where", "what place": "where", "how come": "why", "which person": "who",
    "how tall": "height", "how high": "height", "how far": "distance", "how old": "age",
}
# A request put as a need: "I need a banana bread recipe" asks for one.
LEADING_FRAMES = re.compile(r"^(?:i need|i want|i would like|i am looking for)\b")
PHRASES = {
    "percent": "%", "per cent": "%", "in simple terms": "simply", "short for": "stand for",
    "right now": "now", "get rid of": "remove", "united states of america": "usa",
    "united states": "usa", "united kingdom": "uk",
}
# Frames, question forms and phrases in one pass; longer phrases first, whole words only.
REWRITES = {**dict.fromkeys(FRAMES, ""), **QUESTION_FORMS, **PHRASES}
REWRITE = re.compile(
    r"(?<!\S)(?:" + "|".join(re.escape(p) for p in sorted(REWRITES, key=len, reverse=True)) + r")(?!\S)"
)
TOKEN = re.compile(
    r"\d+(?:[.,]\d+)*(?:st|nd|rd|th)?"          # numbers, 1,000 and 3.5 and 21st
    r"|[^\W\d_][\w]*(?:[.'][\w]+)*(?:\+\+|#)?"  # words, node.js, c++, c#
    r"|[%$€£°+\-*/^=<>]"                        # symbols that change a question's meaning
)
HYPHEN = re.compile(r"(?<=\w)-(?=\w)")  # "ten-year-old", "sci-fi": parts read as words

# Words with no content, left out of both the comparison and the word order.
FILLER = frozenset(
    "a an the is are am be been being do does doing can could would should may might must shall will "
    "was were did had has have having it its there this that these those some any so just really actually "
    "exactly basically also what which and or hi hey hello me my please kindly very".split()
)
# Prepositions that rephrasing swaps freely ("in CSS" / "with CSS"); left out of the comparison,
# but kept in the word order, where "to" and "of" join the words on either side.
LINKS = frozenset("of in on at with using via for about by to into onto toward towards as within inside".split())
# Asked for, not about: "list", "give", ... as the first word only ("reverse a list" keeps its list).
REQUEST_VERBS = frozenset("list name give suggest recommend show tell provide share".split())
# Words that only say "explain it"; "define X" and "what is the definition of X" ask the same.
EXPLAIN = frozenset("explain explanation describe description define definition meaning mean".split())
# Nouns that only name the kind of answer after "what"/"which": "which city is the capital of ...".
ANSWER_KINDS = frozenset("city town country nation state place person kind type sort thing".split())
NEGATIONS = frozenset("not no never none nobody nothing neither nor without".split())
PAST = frozenset("was were did had".split())
FUTURE = frozenset("will shall".split())
WH_SUBJECTS = frozenset("who whom what which".split())
DO_SUPPORT = frozenset("do does did".split())
# Irregular forms and synonyms, read as one word.
SYNONYMS = {
    **dict.fromkeys("wrote written writes writing author".split(), "write"),
    **dict.fromkeys("began begun begin beginning starting".split(), "start"),
    **dict.fromkeys("made making".split(), "make"),
    **dict.fromkeys("took taken".split(), "take"),
    **dict.fromkeys("built building".split(), "build"),
    **dict.fromkeys("got gotten".split(), "get"),
    **dict.fromkeys("gave given".split(), "give"),
    **dict.fromkeys("ran running".split(), "run"),
    **dict.fromkeys("spoke spoken".split(), "speak"),
    **dict.fromkeys("bought purchase".split(), "buy"),
    **dict.fromkeys("summary summarise".split(), "summarize"),
    **dict.fromkeys("sold".split(), "sell"),
    **dict.fromkeys("delete erase".split(), "remove"),
    **dict.fromkeys("biggest".split(), "largest"),
    **dict.fromkeys("highest".split(), "tallest"),
    **dict.fromkeys("quickest".split(), "fastest"),
    **dict.fromkeys("quick quickly rapid".split(), "fast"),
    **dict.fromkeys("repo".split(), "repository"),
    **dict.fromkeys("dict".split(), "dictionary"),
    **dict.fromkeys("dir folder".split(), "directory"),
    **dict.fromkeys("db".split(), "database"),
    **dict.fromkeys("js".split(), "javascript"),
    **dict.fromkeys("ts".split(), "typescript"),
    **dict.fromkeys("app".split(), "application"),
    **dict.fromkeys("config".split(), "configuration"),
    **dict.fromkeys("max".split(), "maximum"),
    **dict.fromkeys("min".split(), "minimum"),
    **dict.fromkeys("asc".split(), "ascending"),
    **dict.fromkeys("desc".split(), "descending"),
    **dict.fromkeys("colour".split(), "color"),
    **dict.fromkeys("favourite".split(), "favorite"),
    **dict.fromkeys("centre".split(), "center"),
    **dict.fromkeys("autumn".split(), "fall"),
    **dict.fromkeys("film".split(), "movie"),
    **dict.fromkeys("kid".split(), "child"),
    **dict.fromkeys("ok alright".split(), "okay"),
    **dict.fromkeys("man human people".split(), "person"),
    **dict.fromkeys("currently current".split(), "now"),
    **dict.fromkeys("into onto toward towards".split(), "to"),
    **dict.fromkeys("mine myself".split(), "i"),
    **dict.fromkeys("us our ours ourselves".split(), "we"),
    **dict.fromkeys("your yours yourself".split(), "you"),
    **dict.fromkeys("him his himself".split(), "he"),
    **dict.fromkeys("her hers herself".split(), "she"),
    **dict.fromkeys("them their theirs themselves".split(), "they"),
    **dict.fromkeys("whom whose".split(), "who"),
}
# Opposites and negating prefixes, only to name the reason of a refusal ("direction", "negation"):
# these words are content, so a prompt that has one the other lacks is refused anyway.
OPPOSITE_PAIRS = (
    "up/down left/right increase/decrease before/after maximum/minimum ascending/descending to/from "
    "import/export encrypt/decrypt upload/download buy/sell push/pull enable/disable in/out on/off "
    "over/under above/below raise/lower compress/decompress first/last start/end open/close add/remove "
    "largest/smallest longest/shortest tallest/shortest fastest/slowest high/low more/less love/hate "
    "benefit/risk advantage/disadvantage pro/con heat/cool encode/decode start/stop rise/fall"
).split()
NEGATING_PREFIXES = ("un", "in", "im", "il", "ir", "dis", "non", "de")
UNITS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
TENS = "twenty thirty forty fifty sixty seventy eighty ninety".split()
NUMBER_WORDS = {**{w: i for i, w in enumerate(UNITS)}, **{w: 10 * i for i, w in enumerate(TENS, 2)}}
SCALES = {"hundred": 100, "thousand": 1_000, "million": 1_000_000, "billion": 1_000_000_000}
MAX_ORDERED_WORDS = 60  # longer prompts are compared word by word in order (the pairwise check is quadratic)


@dataclass(frozen=True)
class PromptSignature:
    """What the guard compares: numbers in order, negations, tense, content words, and the word order."""

    numbers: tuple[str, ...]
    negations: int
    tense: frozenset[str]
    content: frozenset[str]
    order: tuple[str, ...]  # content words and links, as written
    do_support: bool  # "who did X kill": the wh-word is the object
    asks_for: frozenset[str]  # the kind of answer named after "what"/"which": city, country, ...


@lru_cache(maxsize=4096)
def signature(prompt: str) -> PromptSignature:
    """Reduce a prompt to the parts that decide its answer (cached: a cached prompt is checked often)."""
    tokens = _merge_number_words(_words(prompt))
    numbers = tuple(value for _, value in tokens if value is not None)
    words = [token for token, value in tokens if value is None]
    tense = frozenset("past" if w in PAST else "future" for w in words if w in PAST or w in FUTURE)
    negations = sum(w in NEGATIONS for w in words)
    order = tuple(_canonical(w) for i, w in enumerate(words) if w not in NEGATIONS and _kept(words, i))
    content = frozenset(w for w in order if w not in CANONICAL_LINKS)
    do_support = any(a in WH_SUBJECTS and b in DO_SUPPORT for a, b in zip(words, words[1:]))
    asks_for = frozenset(_canonical(w) for i, w in enumerate(words) if _answer_kind(words, i))
    return PromptSignature(numbers, negations, tense, content, order, do_support, asks_for)


def mismatch(prompt: str, cached_prompt: str) -> Optional[str]:
    """Why `cached_prompt`'s answer must not serve `prompt`, or None when it may."""
    a, b = signature(prompt), signature(cached_prompt)
    if a.numbers != b.numbers:
        return "numbers"
    if a.negations != b.negations:
        return "negation"
    if a.tense != b.tense:
        return "tense"
    if a.asks_for and b.asks_for and a.asks_for != b.asks_for:
        return "content"
    if not a.content or a.content != b.content:
        return _difference(a.content - b.content, b.content - a.content)
    if not _same_roles(a, b):
        return "order"
    return None


def _words(prompt: str) -> list[str]:
    """Case-folded words and symbols, contractions spelled out, frames and phrases rewritten."""
    text = unicodedata.normalize("NFKC", prompt).replace("\u2019", "'")
    if not text.isupper():  # in a prompt all in capitals, "US" may be the pronoun
        text = COUNTRY_US.sub(" usa ", text)
    text = text.casefold()
    for pattern, replacement in CONTRACTIONS:
        text = pattern.sub(replacement, text)
    text = REWRITE.sub(lambda match: REWRITES[match.group()], " ".join(TOKEN.findall(HYPHEN.sub(" ", text))))
    return LEADING_FRAMES.sub("", text.strip()).split()


def _kept(words: list[str], i: int) -> bool:
    """Whether the i-th word counts: not filler, not an "explain", not a leading request verb, not an answer kind."""
    word = words[i]
    if word in FILLER or word in EXPLAIN:
        return False
    if i == 0 and word in REQUEST_VERBS:
        return False
    return not _answer_kind(words, i)


def _answer_kind(words: list[str], i: int) -> bool:
    """Whether the i-th word names the kind of answer, as "city" in "which city is ..." does."""
    return words[i] in ANSWER_KINDS and i > 0 and words[i - 1] in WH_SUBJECTS


@lru_cache(maxsize=65536)
def _canonical(word: str) -> str:
    """One spelling per word: synonyms and irregular forms mapped, then suffixes stripped."""
    word = SYNONYMS.get(word, word)
    return SYNONYMS.get(_stem(word), _stem(word))


def _difference(only_a: frozenset[str], only_b: frozenset[str]) -> str:
    """The reason for differing content: "negation" (legal/illegal), "direction" (up/down), else "content"."""
    if any(x == p + y or y == p + x for x in only_a for y in only_b for p in NEGATING_PREFIXES):
        return "negation"
    if (only_a | only_b) & DIRECTION_WORDS:
        return "direction"
    return "content"


def _same_roles(a: PromptSignature, b: PromptSignature) -> bool:
    """Reordering that keeps who does what to whom: no swapped pair has a shared word between it in both."""
    shared = set(a.order) & set(b.order)
    seq_a = [w for w in a.order if w in shared]
    seq_b = [w for w in b.order if w in shared]
    if seq_a == seq_b:
        return True
    if a.do_support != b.do_support or max(len(seq_a), len(seq_b)) > MAX_ORDERED_WORDS:
        return False
    counts_a, counts_b = Counter(seq_a), Counter(seq_b)
    if any(max(counts_a[w], counts_b[w]) > 1 for w in shared - CANONICAL_LINKS - PRONOUNS):
        return False  # "list of dicts to dict of lists": repeated words keep their order
    once = [w for w in seq_a if counts_a[w] == 1 and counts_b[w] == 1]  # in a's order
    pos_a = {w: i for i, w in enumerate(seq_a) if counts_a[w] == 1}
    pos_b = {w: i for i, w in enumerate(seq_b) if counts_b[w] == 1}
    for u, v in combinations(once, 2):  # u before v in a
        if pos_b[u] > pos_b[v] and set(seq_a[pos_a[u] + 1:pos_a[v]]) & set(seq_b[pos_b[v] + 1:pos_b[u]]):
            return False
    return True


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
    return word[:-1] if word.endswith("e") and len(word) > 3 else word


# Word lists in their canonical spelling (they need `_canonical`, so they come last).
CANONICAL_LINKS = frozenset(_canonical(w) for w in LINKS)
PRONOUNS = frozenset("i we you he she they".split())
DIRECTION_WORDS = frozenset(_canonical(w) for pair in OPPOSITE_PAIRS for w in pair.split("/"))
