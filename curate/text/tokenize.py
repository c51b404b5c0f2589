"""Script-aware word tokens, shared by the stages that match words across languages.

Chinese is segmented with jieba; Japanese by script runs (kanji and katakana runs are content
words, hiragana runs are particles and break phrases); Korean by space with common particles
stripped; everything else by Unicode word characters (with combining marks, which Python's \\w
misses).
"""

from __future__ import annotations

import functools
import logging
import re
import unicodedata


def _mark_ranges() -> str:
    """Combining marks as a regex class body: Python's \\w misses them (Devanagari vowel signs...)."""
    ranges, start, prev = [], None, None
    for cp in range(0x300, 0x10000):
        if unicodedata.category(chr(cp)).startswith("M"):
            if start is None:
                start = cp
            elif cp != prev + 1:
                ranges.append((start, prev))
                start = cp
            prev = cp
    ranges.append((start, prev))
    return "".join(f"\\u{a:04x}-\\u{b:04x}" if a != b else f"\\u{a:04x}" for a, b in ranges)


_WORDCHAR = f"(?:[^\\W_]|[{_mark_ranges()}])"
WORD = re.compile(f"{_WORDCHAR}+(?:['’\\-]{_WORDCHAR}+)*")
_HAN = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_KANA = "\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f"
_HANGUL = "\uac00-\ud7af\u1100-\u11ff\u3130-\u318f"
HAS_HAN = re.compile(f"[{_HAN}]")
HAS_KANA = re.compile(f"[{_KANA}]")
HAS_HANGUL = re.compile(f"[{_HANGUL}]")
CJK_CHAR = re.compile(f"[{_HAN}{_KANA}{_HANGUL}]")
# Japanese script runs: kanji, katakana (with the long-vowel mark), hiragana, anything else.
JA_RUNS = re.compile(f"[{_HAN}々〆ヵヶ]+|[\u30a0-\u30ff\u31f0-\u31ff\uff66-\uff9f]+|[\u3040-\u309f]+|[^{_HAN}{_KANA}]+")
HIRAGANA_RUN = re.compile("^[\u3040-\u309f]+$")
# Korean particles (josa) and copulas, longest first, stripped from the end of a word.
KO_PARTICLES = sorted(
    "은 는 이 가 을 를 의 에 에서 에게 께서 으로 로 와 과 도 만 까지 부터 보다 처럼 이나 나 이란 란 이라는 라는 "
    "에서의 으로의 에의 과의 와의 이다 였다 이었다 입니다 입니까 습니까 인가 인가요 나요 까요 에서는 에는 으로는 로는 까지의".split(),
    key=len, reverse=True,
)
POSSESSIVE = re.compile(r"['’]s$")
NUMBER = re.compile(r"^[\d.,:/\-]+$")


def normalize_token(token: str) -> str:
    return unicodedata.normalize("NFKC", token).casefold()


@functools.lru_cache(maxsize=1)
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba


def _korean_stem(word: str) -> str:
    for particle in KO_PARTICLES:
        if word.endswith(particle) and len(word) > len(particle):
            return word[: -len(particle)]
    return word


def _split_cjk(word: str, language: str) -> list[list[str]]:
    """Tokens of a word-character run with CJK script, as phrase pieces (a list per unbroken piece)."""
    if HAS_KANA.search(word) or (language == "ja" and HAS_HAN.search(word)):
        pieces: list[list[str]] = [[]]
        for run in JA_RUNS.findall(word):
            if HIRAGANA_RUN.match(run):
                pieces.append([])  # particles and inflections separate content words
            else:
                pieces[-1].append(run)
        return [p for p in pieces if p]
    if HAS_HANGUL.search(word) and not HAS_HAN.search(word):
        return [[_korean_stem(word)]]
    return [[t for t in _jieba().lcut(word, HMM=True) if t.strip()]]


def tokenize(text: str, language: str) -> list[list[tuple[str, str]]]:
    """Phrase chunks (split at punctuation) of (normalized, surface) tokens."""
    chunks: list[list[tuple[str, str]]] = [[]]
    end = 0
    for match in WORD.finditer(text):
        gap = text[end : match.start()]
        if gap.strip():
            chunks.append([])
        end = match.end()
        word = match.group()
        if CJK_CHAR.search(word):
            pieces = _split_cjk(word, language)
            for i, piece in enumerate(pieces):
                if i:
                    chunks.append([])
                chunks[-1].extend((normalize_token(t), t) for t in piece)
        else:
            word = POSSESSIVE.sub("", word)
            chunks[-1].append((normalize_token(word), word))
    return [c for c in chunks if c]


def is_cjk(token: str) -> bool:
    return bool(CJK_CHAR.search(token))


HAN_OR_KANA = re.compile(f"[{_HAN}{_KANA}]")


def join_tokens(tokens: tuple[str, ...] | list[str]) -> str:
    """Next to a Chinese or Japanese character words join without a space; elsewhere (Korean too) with one."""
    out = tokens[0]
    for prev, tok in zip(tokens, tokens[1:], strict=False):
        out += tok if HAN_OR_KANA.match(prev[-1]) or HAN_OR_KANA.match(tok[0]) else " " + tok
    return out


