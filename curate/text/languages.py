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
