"""Language codes and the names prompts use for them."""

from __future__ import annotations

LANGUAGE_NAMES = {
    "en": "English", "zh": "Simplified Chinese", "es": "Spanish", "fr": "French", "de": "German",
    "ru": "Russian", "ar": "Arabic", "ja": "Japanese", "ko": "Korean", "pt": "Portuguese", "hi": "Hindi",
    "it": "Italian", "nl": "Dutch", "pl": "Polish", "tr": "Turkish", "vi": "Vietnamese", "id": "Indonesian",
    "th": "Thai", "uk": "Ukrainian", "fa": "Persian", "he": "Hebrew", "sv": "Swedish", "bn": "Bengali",
}


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


# ISO 639-1 (two-letter) language codes.
ISO_639_1 = frozenset("""
aa ab ae af ak am an ar as av ay az ba be bg bi bm bn bo br bs ca ce ch co cr cs cu cv cy da de dv dz ee el en eo es
et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki
kj kk kl km kn ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no
nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw ta te
tg th ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
""".split())


def base_language(code: str) -> str:
    """`pt-BR`, `pt_br` -> `pt`."""
    return code.strip().lower().replace("_", "-").split("-")[0]


def check_language_codes(codes: list[str] | None) -> list[str] | None:
    """Pydantic validator: every code is ISO 639-1 (a region suffix such as `pt-BR` is allowed)."""
    unknown = [c for c in codes or () if base_language(c) not in ISO_639_1]
    if unknown:
        raise ValueError(f"unknown language codes {unknown}: use ISO 639-1 codes such as 'en', 'zh', 'fi'")
    return codes
