"""The language of a prompt, guessed cheaply and without a language-ID package.

Used by the router (every routing decision carries `language`, and the script decides whether the
English embedding model can read a prompt at all) and by `routing.evaluate` (per-language breakdown)
and `routing.data.ood.build` (row selection): one definition for all three.
"""
from __future__ import annotations

import re
import unicodedata
from collections import defaultdict

# --- language of a prompt -------------------------------------------------------------------------
# A cheap, dependency-free guess (no language-ID package is a dependency): the Unicode script of the
# letters decides for non-Latin scripts; Latin-script text is scored on diacritics and a few dozen
# frequent words of each of the commonest Latin-script languages, and is English when nothing points elsewhere.
# Good enough to group an evaluation by language; not a general language identifier.

# Unicode script (first word of a letter's character name) -> ISO 639-1, where one language dominates.
_SCRIPT_LANG = {
    "HANGUL": "ko", "CJK": "zh", "HIRAGANA": "ja", "KATAKANA": "ja", "HEBREW": "he", "BENGALI": "bn",
    "TAMIL": "ta", "TELUGU": "te", "ORIYA": "or", "THAI": "th", "GREEK": "el", "GUJARATI": "gu",
    "GURMUKHI": "pa", "KANNADA": "kn", "MALAYALAM": "ml", "GEORGIAN": "ka", "ARMENIAN": "hy", "SINHALA": "si",
    "KHMER": "km", "LAO": "lo", "MYANMAR": "my", "ETHIOPIC": "am", "TIBETAN": "bo",
    "CYRILLIC": "ru", "ARABIC": "ar", "DEVANAGARI": "hi",
}
_UKRAINIAN_LETTERS = set("іїєґІЇЄҐ")
_URDU_LETTERS = set("ٹڈڑںےۓھ")
_PERSIAN_LETTERS = set("پچژگکی")
_MARATHI_WORDS = {"आहे", "आहेत", "आहेस", "तुम्ही", "तुम्हाला", "मला", "माझे", "माझा", "नाही", "काय", "आपण", "आपल्याला",
                  "कसे", "तुला", "मी", "कोणते", "किती", "झाला"}
_UKRAINIAN_WORDS = {"ти", "як", "що", "хто", "це", "мене", "коли", "де", "чи", "та", "й", "але", "було", "вже", "мені"}
_RUSSIAN_LETTERS = set("ыэъёЫЭЪЁ")
_ARABIC_LETTERS = set("ةيكى")  # Arabic forms where Persian and Urdu write ی and ک
_PERSIAN_WORDS = {"به", "با", "من", "از", "را", "این", "است", "که", "هست", "تو", "چی", "خوبی", "باش", "برم", "بده"}
_PUNCTUATION = "?!.,;:।॥\"'()[]{}«»“”¿¡؟،"

_LATIN_WORD_LISTS = {
    "en": "the is are was you your what how why who where when and of to it this that my do does can with for "
          "have has please thanks thank hello hi hey a an in on be not will would should i am there about as "
          "through from by or if so all just get make write explain give tell show walk derive describe list "
          "create help find fix calculate compare summarize",
    "es": "el la los las que qué es por para con una cómo cuál está estás hola gracias muy pero y del al "
          "mi tu sí bien eres tienes soy también dónde quién buenos días hay esto eso puedes te yo tú usted",
    "fr": "le les des est et je vous pas une pour qui dans sur avec ce ça c j qu bonjour merci oui suis "
          "mon comment pourquoi quel quelle êtes très aussi où au aux du tu es moi toi salut",
    "de": "der die das und ist ich du nicht ein eine zu mit wie was bist sind hallo danke ja nein auf für mir "
          "mich dich wir sie guten tag heute kannst bitte warum wer wo mein dein bin hast",
    "pt": "o os as um uma é não você voce eu do da dos das em na com para olá ola oi obrigado obrigada tudo "
          "bem sim muito qual quantos meu minha faz faça está estou isso isto seu sua",
    "it": "il lo gli della di che è sono sei non una per con come ciao grazie cosa perché perche questo "
          "quello mi ti ho hai ha molto bene buongiorno anche ma io dove chi nel sul alla così dimmi scrivi",
    "nl": "de het een en ik je jij niet van wat hoe dat zijn ben heb hebt op met voor goed hallo dank bedankt "
          "graag wel ook maar er naar kun kan jou mij waarom wie",
    "sv": "och är jag du inte det att en ett som på för med hej tack vad hur vem varför bra mycket har kan "
          "min din mig dig",
    "tr": "bir ve bu ne nasıl merhaba evet hayır teşekkür ederim ben sen mı mi mu mü musun misin var yok çok "
          "iyi için sana beni seni nerede kim neden",
    "id": "saya anda apa ini itu yang dan di ke dari tidak bisa kamu aku selamat pagi terima kasih ada dengan "
          "untuk bagaimana siapa kenapa mengapa halo apakah sudah belum juga tahu",
    "hi": "kya hai kaise tum aap aapka hoon namaste nahi raha rahe hain mein bhi kuch acha accha theek thik kyun kaun "
          "mujhe tumhe yaar bahut karo",  # romanized Hindi (Hinglish)
    "yo": "bawo ni wo lo kini nibo awon ati fun kaabo se",
    "pl": "jest nie się że to co jak czy mnie mi ty ja dla na tak dzień dobry dziękuję cześć proszę",
}
LATIN_WORDS: dict[str, set[str]] = {lang: set(words.split()) for lang, words in _LATIN_WORD_LISTS.items()}
# Letters that point at one language (or two) strongly.
_LATIN_LETTERS = {
    "es": "ñ¿¡", "pt": "ãõâêôç", "de": "ß", "sv": "å", "tr": "ğşı", "pl": "łąęśźżćń",
    "fr": "œëîû", "yo": "ẹọṣńǹ", "vi": "ơưđạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ",
}
_WORD = re.compile(r"[^\W\d_]+")


def script_of(ch: str) -> str:
    """The script of a letter: LATIN for ASCII and accented Latin letters, else the first word of its
    Unicode name (CYRILLIC, ARABIC, CJK, HANGUL, DEVANAGARI...)."""
    if ch.isascii():
        return "LATIN"
    name = unicodedata.name(ch, "")
    return name.split(" ", 1)[0] if name else "?"


def detect_lang(text: str) -> str:
    """The ISO 639-1 code of the prompt's language, guessed cheaply: the Unicode script for non-Latin
    scripts (kana -> ja before Han -> zh; Cyrillic ru/uk, Arabic ar/fa/ur, Devanagari hi/mr by a few
    telltale letters or words), common words and diacritics for Latin script, and "en" when there is no
    evidence (ASCII text with no foreign function words, code, numbers)."""
    counts: dict[str, int] = defaultdict(int)
    letters = 0
    for ch in text:
        if ch.isalpha():
            letters += 1
            counts[script_of(ch)] += 1
    if not letters:
        return "en"
    if counts["HIRAGANA"] + counts["KATAKANA"]:
        return "ja"
    script, n = max(((s, c) for s, c in counts.items() if s in _SCRIPT_LANG), key=lambda sc: sc[1],
                    default=("LATIN", 0))
    if n and n >= 0.2 * letters:
        chars = set(text)
        words = {word.strip(_PUNCTUATION) for word in text.casefold().split()}
        if script == "CYRILLIC":
            if chars & _UKRAINIAN_LETTERS:
                return "uk"
            return "ru" if chars & _RUSSIAN_LETTERS or not words & _UKRAINIAN_WORDS else "uk"
        if script == "ARABIC":
            if chars & _URDU_LETTERS:
                return "ur"
            if chars & _ARABIC_LETTERS:
                return "ar"
            return "fa" if chars & _PERSIAN_LETTERS or words & _PERSIAN_WORDS else "ar"
        if script == "DEVANAGARI":
            return "mr" if words & _MARATHI_WORDS else "hi"
        return _SCRIPT_LANG[script]
    return _latin_lang(text)


def _latin_lang(text: str) -> str:
    lowered = text.casefold()
    words = set(_WORD.findall(lowered))
    scores = {lang: len(words & vocab) for lang, vocab in LATIN_WORDS.items()}
    for lang, marks in _LATIN_LETTERS.items():
        hits = sum(lowered.count(mark) for mark in marks)
        if hits:
            scores[lang] = scores.get(lang, 0) + 1 + min(hits, 3)
    best = max(scores, key=lambda lang: (scores[lang], lang == "en"))
    return best if scores[best] > 0 else "en"
