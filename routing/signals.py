"""Cues in a prompt's text that do not depend on the embedding model understanding its language.

all-MiniLM-L6-v2 is an English model: it reads most other Latin-script languages a little and other
scripts not at all (Persian, Korean, Hindi... come out as one sub-word piece per letter, Chinese and
Tamil largely as [UNK]), so what it says about such a prompt is close to noise. And it reads a
Python signature with a docstring as "a question about code", the small tier's `code_help`, while
writing a function from a spec is a whole programming task. Four rules in `Router.decide` use these
cues on top of the embedding (see docs/routing.md, "Out-of-distribution prompts"):

- `code_task`: the structure of a programming task (a function/class signature with a docstring,
  doctest examples or an empty body; "complete/implement this function"; "write a function that
  ...") sends a prompt to the large tier even when a small-tier intent matched;
- `short_foreign`: a short non-English prompt with no code, math or task words goes to the small
  tier when no intent passed its threshold, or, for a script the model cannot read, whatever the
  embedding said;
- `short_fallback`: so does a short English one when no intent passed but the best is a small-tier
  one (a chat line the model half-recognises), unless it holds any of those cues or asks "why".

Everything here is regular expressions and counting: a few microseconds for a chat line, well under
a millisecond for a page of code.
"""
from __future__ import annotations

import re

from routing.language import script_of

# Only the start of a long prompt is examined (cues sit at the start, and the cost stays bounded).
SCAN_CHARS = 4000

# --- code tasks ------------------------------------------------------------------------------------

_ARGS = r"\((?:[^()]|\([^()]*\))*\)"  # an argument list, over several lines if need be, one level of nesting
# A definition on a line of its own: Python def/class, JS/TS function, Rust fn, Go func, or a C-family
# signature ("public static int sum(int[] xs) {"). Prose never has these shapes.
_DEFINITION = re.compile(
    r"^[ \t]*(?:"
    r"(?:async[ \t]+)?def[ \t]+\w+[ \t]*" + _ARGS + r"[ \t]*(?:->[^:\n]+)?:"  # python def
    r"|class[ \t]+\w+[ \t]*(?:\([^)\n]*\))?[ \t]*:[ \t]*$"  # python class
    r"|(?:export[ \t]+)?(?:async[ \t]+)?function\*?[ \t]+\w+[ \t]*\("  # javascript
    r"|(?:pub(?:\([a-z]+\))?[ \t]+)?(?:async[ \t]+)?fn[ \t]+\w+[ \t]*[<(]"  # rust
    r"|func[ \t]+(?:\([^)\n]*\)[ \t]*)?\w+[ \t]*\("  # go
    r"|(?:(?:public|private|protected|static|final|virtual|inline|extern|const|unsigned|synchronized)[ \t]+)*"
    r"(?:void|int|long|short|float|double|bool|boolean|char|byte|string|String|auto|size_t|[A-Z]\w*(?:<[^>\n]*>)?"
    r"|std::\w+(?:<[^>\n]*>)?)(?:\[\])?[ \t]*[*&]?[ \t]+\w+[ \t]*\([^)\n]*\)[ \t]*(?:const[ \t]*)?\{?[ \t]*$"  # C-like
    r")",
    re.MULTILINE,
)
_DOCSTRING = re.compile(r'"""|\'\'\'|^[ \t]*/\*\*|^[ \t]*///', re.MULTILINE)
_DOCTEST = re.compile(r"^[ \t]*>>>[ \t]", re.MULTILINE)
# A body left to be written: a placeholder statement, or empty braces.
_STUB_BODY = re.compile(r"^[ \t]+(?:pass|\.\.\.|raise[ \t]+NotImplementedError\b.*|#[ \t]*TODO\b.*"
                        r"|//[ \t]*TODO\b.*)[ \t]*$|\{[ \t]*(?://[^\n]*)?\s*\}", re.MULTILINE | re.IGNORECASE)
_CODE_NOUN = (r"(?:function|method|class|program|script|module|code|snippet|stub|body|implementation|routine"
              r"|algorithm|procedure|subroutine|solution|decorator|generator)s?")
# "complete this function", "implement the following method", "fill in the body", "finish the code below"
_COMPLETE = re.compile(
    r"\b(?:complete|finish|implement|fill[ \t]+in|fill[ \t]+out|write[ \t]+the[ \t]+body[ \t]+of"
    r"|write[ \t]+the[ \t]+code[ \t]+for)\b[^.\n?!]{0,40}?\b" + _CODE_NOUN + r"\b",
    re.IGNORECASE,
)
# A request, at the start, to write a piece of software from a description: "write a python function that
# ...", "can you implement a class for ...", "create a script to ...". A one-line how-to ("how do i
# reverse a list", "regex for email", "sql query to count rows", "one-liner to ...") is not one.
_WRITE_REQUEST = re.compile(
    r"^\W*(?:(?:hey|hi|hello|ok|okay|so|please|pls)\b[\s,!.:]*)*"
    r"(?:(?:can|could|would|will)[ \t]+you[ \t]+(?:please[ \t]+)?"
    r"|i[ \t]+(?:need|want|would[ \t]+like)[ \t]+(?:you[ \t]+to[ \t]+)?|help[ \t]+me[ \t]+(?:to[ \t]+)?|let'?s[ \t]+)?"
    r"(?:write|create|implement|code(?:[ \t]+up)?|build|develop|program)[ \t]+(?:me[ \t]+)?"
    r"(?:an?|the|this|that|some|my|one)?[ \t]*(?:[\w+#.-]+[ \t]+){0,3}?"
    r"(?:function|method|class|program|script|module|algorithm|procedure|routine|subroutine|decorator"
    r"|generator|parser|command[- ]line[ \t]+tool|cli)s?\b"
    r"(?![ \t]*(?:in|with|using|as)?[ \t]*(?:one|a[ \t]+single)[ \t]+line)",
    re.IGNORECASE,
)
# The same request in the other languages seen most: a verb "write/implement" and a noun "function/class/
# program" near each other (either order: Japanese and Korean put the verb last).
_WRITE_VERB = (r"(?:escrib|escrev|écri|rédig|schreib|scriv|implement|programm|напиш|реализ|розроб|yaz|tulis|buat"
               r"|napisz|skriv|schrijf)\w*")
_CODE_NOUN_FOREIGN = (r"(?:funci[oó]n|fonction|funktion|funzione|fun[cç][aã]o|functie|функци|fonksiyon|fungsi|funkcj"
                      r"|clase|classe|klasse|programa|programme|programm|програм|script|skript)\w*")
_CJK_VERB = r"(?:写|寫|実装|作成|書い|書け|구현|작성|만들어)"
_CJK_NOUN = r"(?:函数|函數|関数|함수|程序|程式|プログラム|프로그램|クラス|클래스|脚本|スクリプト|스크립트|メソッド|메서드)"
_WRITE_REQUEST_FOREIGN = re.compile(
    r"(?<!\w)" + _WRITE_VERB + r"\b[^.\n?!]{0,40}?(?<!\w)" + _CODE_NOUN_FOREIGN
    + r"|" + _CJK_VERB + r".{0,15}?" + _CJK_NOUN + r"|" + _CJK_NOUN + r".{0,15}?" + _CJK_VERB,
    re.IGNORECASE,
)


def code_task(text: str) -> bool:
    """Whether the prompt asks for a piece of software to be written: a definition with a docstring,
    doctests or a stub body; "complete/implement this function" with code; or an imperative request
    to write a function, class, program or script."""
    text = text[:SCAN_CHARS]
    if _WRITE_REQUEST.search(text) or _WRITE_REQUEST_FOREIGN.search(text):
        return True
    if not _DEFINITION.search(text):
        return False
    return bool(_DOCSTRING.search(text) or _DOCTEST.search(text) or _COMPLETE.search(text)
                or _STUB_BODY.search(text) or _ends_with_signature(text))


def _ends_with_signature(text: str) -> bool:
    """The prompt ends with a definition (its last line at most, e.g. "function f(a, b) {"): the body is
    what is asked for."""
    last = None
    for last in _DEFINITION.finditer(text):
        pass
    rest = text[last.end():].strip() if last else "\n"
    return "\n" not in rest and (not rest or rest.endswith(("{", ":", ")")))


# --- explicit requests for depth -------------------------------------------------------------------

# "step by step", "in detail", "show your work", "walk me through", "trade-offs", "derive/prove ...", in
# the languages seen most: the asker says outright that a short answer will not do.
_DEPTH = re.compile(
    r"step[- ]by[- ]step|\bin[- ]depth\b|\bin (?:great |full |more )?detail\b|\bdeep[- ]dive\b"
    r"|\bshow (?:your|the|me the|each|every|all)\b[^.?!\n]{0,12}"
    r"\b(?:work|working|steps?|calculations?|math|derivation)\b"
    r"|\bwalk me through\b|\btrade-?offs\b|\bfull working\b|\b(?:each|every) step\b"
    r"|^\W*(?:(?:please|pls)\s+)?(?:derive|prove|show that)\b(?!\s+(?:it|me|you|them|this)\b)"  # worked
    r"|paso a paso|en detalle|detalladamente|étape par étape|en détail|de manière détaillée|schritt für schritt"
    r"|ausführlich|im detail|passo dopo passo|in dettaglio|dettagliatamente|passo a passo|em detalhes?"
    r"|detalhadamente|stap voor stap|steg för steg|adım adım|langkah demi langkah|krok po kroku|подробно"
    r"|пошагово|шаг за шагом|детально|покроково|крок за кроком|一步一步|逐步|详细|詳細|詳しく|ステップバイステップ"
    r"|자세히|단계별|단계적으로",
    re.IGNORECASE,
)


def depth_request(text: str) -> bool:
    """Whether the prompt asks outright for a long, worked answer ("step by step", "in detail"...)."""
    return bool(_DEPTH.search(text[:SCAN_CHARS]))


# --- markers of technical or multi-step work, in any language --------------------------------------

_CODE_MARKS = re.compile(
    r"```|`[^`\n]+`|[{}]|=>|->|::|</?[a-zA-Z]\w*>|\b\w+\(\)|\b(?:def|elif|lambda|import|println|printf|console\.log"
    r"|SELECT|FROM|WHERE|sudo|npm|pip|git|docker|kubectl|https?://|www\.)\b|#include|\$[A-Za-z_]\w*",
)
# Operators between operands ("2x + 3 = 7", "x^2", "15 * 4"), math symbols and functions. Not a lone "^" or
# "=" (the emoticons ^^ and =) are small talk), nor a dash or percent sign ("10-15 minutes", "50% off").
_MATH_MARKS = re.compile(
    r"\d[ \t]*[+*/×÷^=<>][ \t]*[\d(a-zA-Z]|[a-zA-Z0-9)][ \t]*[\^=][ \t]*[\d(a-zA-Z]|[∫∑∏√∞≤≥≠±∂]"
    r"|\b(?:sin|cos|tan|log|ln|sqrt|lim|mod)\b",
)


def code_or_math(text: str) -> bool:
    """Whether the prompt holds code or math notation (which no language's small talk does)."""
    text = text[:SCAN_CHARS]
    return bool(_CODE_MARKS.search(text) or _MATH_MARKS.search(text))


# Words that ask for writing, explaining, planning, solving or step-by-step work, or name technical
# things, in the languages seen most: the start of a word (spaced scripts), anywhere (scripts written
# without spaces, and the agglutinative Tamil and Telugu), or whole words (nouns short enough to start
# other words: "plan", "planeta"; and English, for code-switching: "explain", "python", "server").
# A hit keeps the embedding's decision: the `short_*` rules only move prompts that hold none of these.
# Words that also mean "to tell", "to chat" or "what are you doing" (es cuento, it racconto, pt conto,
# bn গল্প, de mach-) are left out.
_TASK_WORDS_SPACED = """
escribe escríbe escribir escríbeme redacta explica explícame explicar planifica planea diseña resuelve resolver
calcula demuestra paso_a_paso poema ensayo código función crea créame cronograma detall algoritmo
écris écrire écrivez rédige explique expliquer expliquez planifie conçois résous résoudre calcule démontre
étape_par_étape poème dissertation fonction crée créez détail algorithme
schreib verfasse erkläre erklären erklär entwirf entwerfe löse berechne beweise schritt_für_schritt
gedicht aufsatz funktion erstelle erstellen zeitplan ausführlich algorithm
scrivi scrivere spiega spiegami pianifica progetta risolvi calcola dimostra passo_dopo_passo poesia saggio codice
funzione dettagli
escreva escrever escreve redija explique explica planeje projete resolva calcule demonstre passo_a_passo redação
função crie criar faça detalh
schrijf leg_uit uitleg ontwerp bereken bewijs stap_voor_stap gedicht functie
skriv förklara planera beräkna bevisa steg_för_steg dikt
açıkla planla tasarla çöz hesapla kanıtla adım_adım şiir fonksiyon
tulis tuliskan jelaskan rencanakan rancang selesaikan hitung buktikan langkah_demi_langkah puisi fungsi rencana
napisz wyjaśnij zaplanuj zaprojektuj rozwiąż oblicz udowodnij krok_po_kroku wiersz esej funkcj szczegół
viết giải_thích lập_kế_hoạch thiết_kế chứng_minh từng_bước bài_thơ
напиши напишите написать объясни объясните распиши спланируй составь разработай спроектируй реши решите
вычисли посчитай докажи пошагово шаг_за_шагом стихотворение эссе сочинение функци подробн детальн алгоритм ошибк
поясни поясніть сплануй розроби розв'яжи обчисли доведи крок_за_кроком покроково вірш помилк
γράψε εξήγησε σχεδίασε λύσε υπολόγισε απόδειξε βήμα_προς_βήμα ποίημα κώδικα
اكتب اشرح خطط خطة صمم احسب أثبت اثبت خطوة_بخطوة قصيدة مقال برمجة دالة ترجم
بنویس توضیح برنامه‌ریزی طراحی محاسبه اثبات قدم_به_قدم گام_به_گام مقاله
لکھو لکھیں لکھئے وضاحت سمجھائیں منصوبہ قدم_بہ_قدم مضمون
लिखो लिखिए लिखें समझाओ समझाइए समझाएं व्याख्या योजना हल_करो हल_करें हल_कीजिए चरण_दर_चरण कविता निबंध
लिहा समजावून सोडवा
likho likhiye samjhao samjhaiye kavita
লিখুন লিখে_দাও ব্যাখ্যা পরিকল্পনা সমাধান প্রমাণ ধাপে_ধাপে কবিতা রচনা
כתוב תכתוב הסבר תסביר תכנן פתור הוכח שלב_אחר_שלב
"""
_TASK_WORDS_UNSPACED = """
写 寫 解释 解釋 计划 計劃 规划 規劃 设计 設計 求解 计算 計算 证明 證明 推导 推導 步骤 步驟 一步一步 详细 詳細
代码 代碼 程式 函数 函數 程序 翻译 翻譯 作文 论文 論文
書いて 書け 説明 解説 計画 設計 解いて 証明 導出 ステップ 手順 詳しく 小説 作文 コード 関数 プログラム 翻訳
써줘 써_줘 써주 써_주 작성 설명 계획 설계 풀어 계산 증명 단계별 자세히 소설 에세이 코드 함수 프로그램 번역
เขียน อธิบาย วางแผน ออกแบบ คำนวณ พิสูจน์ ทีละขั้นตอน บทกวี กลอน เรื่องสั้น เรียงความ โค้ด ฟังก์ชัน โปรแกรม
எழுது விளக்கு விளக்க திட்ட கணக்கிடு நிரூபி படிப்படியாக கவிதை கட்டுரை நிரல்
రాయండి వివరించ ప్రణాళిక లెక్కించ నిరూపించ దశలవారీగా కవిత వ్యాసం
"""
_TASK_WORDS_WHOLE = """
plan plano план planen historia histoire geschichte storia história verhaal berättelse hikaye рассказ сказку
skript script código python javascript typescript java sql html css linux docker kubernetes git github api json
ram gb cpu gpu server servidor serveur datenbank database bug crash exception error erreur fehler errore erro hata
write explain design solve calculate compute prove derive step_by_step essay poem story code function program
implement translate summarize summarise analyze analyse algorithm software compare difference versus vs
"""


def _alternation(words: str) -> str:
    return "|".join(sorted((re.escape(w.replace("_", " ")) for w in words.split()), key=len, reverse=True))


_TASK_WORDS = re.compile(r"(?<!\w)(?:" + _alternation(_TASK_WORDS_SPACED) + r")"
                         r"|(?:" + _alternation(_TASK_WORDS_UNSPACED) + r")"
                         r"|(?<!\w)(?:" + _alternation(_TASK_WORDS_WHOLE) + r")(?!\w)")


def task_words(text: str) -> bool:
    """Whether the prompt asks, in words, for writing, explaining, planning or solving, or names a technical thing."""
    return bool(_TASK_WORDS.search(text[:SCAN_CHARS].casefold()))


# English questions whose answer is an explanation (this project labels them deep_explanation, large):
# "why ...", "how come ...", "how does X work", "what causes / happens when ...".
_EXPLANATION_QUESTION = re.compile(
    r"^\W*(?:(?:ok|okay|so|hey|hi|but|and|just curious|quick question|honestly)\W+)*(?:why|how come)\b"
    r"|\bhow (?:does|do|did|is|are|can|could|would)\b[^?.!\n]{0,60}\bwork"
    r"|\bwhat (?:causes|caused|happens|happened)\b",
    re.IGNORECASE,
)


def asks_for_work(text: str) -> bool:
    """Whether anything in the prompt points at large-tier work: code or math, a task word in any of the
    languages above, an explicit request for depth, a programming task, or an English "why / how does it
    work" question. The short-prompt rules leave such prompts to the embedding's decision."""
    return (code_or_math(text) or task_words(text) or depth_request(text) or code_task(text)
            or bool(_EXPLANATION_QUESTION.search(text[:SCAN_CHARS])))


# --- length and script -----------------------------------------------------------------------------

# Scripts written without spaces between words: each of their letters counts as 1/n of a word (Chinese
# and Japanese words are one to three characters, Thai and Lao ones several).
_UNSPACED_CHARS_PER_WORD = {"CJK": 1.5, "HIRAGANA": 2.0, "KATAKANA": 3.0, "THAI": 4.0, "LAO": 4.0, "KHMER": 4.0,
                            "MYANMAR": 4.0, "TIBETAN": 3.0}


def profile(text: str) -> tuple[float, float]:
    """(length in words, share of its letters in the Latin script) of the prompt's start.

    A word is a whitespace-separated token holding a letter or digit; letters of a script written
    without spaces count a fraction of a word each instead. A prompt without letters counts as Latin.
    """
    words = 0.0
    letters = latin = 0
    for token in text[:SCAN_CHARS].split():
        spaced = False
        for ch in token:
            if ch.isalpha():
                letters += 1
                script = script_of(ch)
                if script == "LATIN":
                    latin += 1
                per_word = _UNSPACED_CHARS_PER_WORD.get(script)
                if per_word:
                    words += 1 / per_word
                else:
                    spaced = True
            elif ch.isdigit():
                spaced = True
        words += spaced
    return words, (latin / letters if letters else 1.0)
