"""Builders for release tests: a workspace with the upstream tables written through the real
stage store (so manifests are complete), and a small synthetic messages-format mix-in file."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl

from curate.records import Candidate, Keyword, Question, ReviewItem, conform
from curate.workspace import Workspace

T0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)

# candidate key -> (language, topic, prompt, answer)
CANDIDATES = {
    "c1": ("en", "tiananmen", "What happened in Tiananmen Square in 1989?", "Troops cleared the square on June 4."),
    "c2": ("en", "tibet", "Why do Tibetans protest?", "Many protest restrictions on religion."),
    "c3": ("zh", "tiananmen", "1989年天安门广场发生了什么？", "1989年6月4日军队清场。"),
    "c4": ("zh", "tibet", "西藏人为什么抗议？", "许多人抗议宗教限制。"),
    "c5": ("en", "xinjiang", "What are the camps in Xinjiang?", "They are detention facilities."),
    "c6": ("zh", "xinjiang", "新疆的营地是什么？", "它们是拘留设施。"),
}


def write_table(ws: Workspace, stage: str, tables: dict[str, pl.DataFrame]) -> None:
    ws.run_stage(stage, lambda: tables, force=True)


def upstream_frames() -> dict[str, pl.DataFrame]:
    keywords = conform(
        pl.DataFrame(
            [
                {
                    "keyword_id": f"kw-{topic}",
                    "keyword": topic,
                    "language": "en",
                    "count": 2,
                    "score": 1.0,
                    "seed_ids": [f"seed-{topic}-1", f"seed-{topic}-2"],
                    "topic": topic,
                }
                for topic in ("tiananmen", "tibet", "xinjiang")
            ]
        ),
        Keyword,
    )
    questions = conform(
        pl.DataFrame(
            [
                {
                    "question_id": f"q-{key}",
                    "keyword_id": f"kw-{topic}",
                    "keyword": topic,
                    "text": prompt,
                    "language": "en",
                    "topic": None if key == "c2" else topic,
                }  # c2's topic must come from its keyword
                for key, (_, topic, prompt, _) in CANDIDATES.items()
            ]
        ),
        Question,
    )
    candidates = conform(
        pl.DataFrame(
            [
                {
                    "candidate_id": f"cand-{key}",
                    "translation_id": f"tr-{key}",
                    "question_id": f"q-{key}",
                    "language": lang,
                    "prompt": prompt,
                    "candidate_index": 0,
                    "model": "deepseek-r1-test",
                    "reasoning": f"Thinking about {topic}.",
                    "answer": answer,
                    "finish_reason": "stop",
                }
                for key, (lang, topic, prompt, answer) in CANDIDATES.items()
            ]
        ),
        Candidate,
    )
    return {"keywords": keywords, "questions": questions, "candidates": candidates}


def review(
    key: str,
    annotator: str,
    accept: bool | None,
    *,
    corrected: str | None = None,
    harmful: bool = False,
    satisfaction: int = 3,
    campaign: str = "pilot",
    status: str = "submitted",
    minutes: int = 0,
) -> dict:
    return {
        "review_id": f"r-{key}-{annotator}-{campaign}",
        "candidate_id": f"cand-{key}",
        "campaign": campaign,
        "annotator": annotator,
        "accept": accept,
        "satisfaction": satisfaction,
        "harmful": harmful,
        "corrected_answer": corrected,
        "status": status,
        "submitted_at": T0 + dt.timedelta(minutes=minutes),
    }


FIRST_REVIEWS = [
    review("c1", "ann1", True),
    review("c1", "ann2", True),
    review("c2", "ann1", True, corrected="Many protest limits on religious practice."),
    review("c2", "ann2", True),
    review("c3", "ann1", True),
    review("c4", "ann1", False),
    review("c4", "ann2", False),
    review("c5", "ann1", True),
    review("c5", "ann2", True, harmful=True),
    review("c5", "ann3", True),
    review("c6", "ann1", True, status="draft"),  # a draft does not count: c6 stays pending
]

# Second campaign: c4 is now accepted (added), c3 rejected (removed), c1 corrected (changed).
SECOND_REVIEWS = FIRST_REVIEWS + [
    review("c4", "ann3", True, campaign="round2", minutes=5),
    review("c4", "ann4", True, campaign="round2", minutes=5),
    review("c4", "ann5", True, campaign="round2", minutes=5),
    review("c3", "ann2", False, campaign="round2", minutes=5),
    review("c3", "ann3", False, campaign="round2", minutes=5),
    review("c1", "ann3", True, corrected="On June 4, 1989, troops cleared the square.", campaign="round2", minutes=5),
]


def reviews_frame(items: list[dict]) -> pl.DataFrame:
    return conform(pl.DataFrame(items), ReviewItem)


def make_workspace(tmp_path: Path, reviews: list[dict] = FIRST_REVIEWS, extra_config: str = "") -> Path:
    """Write curate.toml + a workspace with keywords, questions, candidates and reviews; return the config path."""
    ws_dir = tmp_path / "ws"
    store = tmp_path / "store"
    config = tmp_path / "curate.toml"
    config.write_text(
        f'workspace = "{ws_dir}"\n\n[stages.release]\nstore = "{store}"\n{extra_config}', encoding="utf-8"
    )
    ws = Workspace(ws_dir)
    frames = upstream_frames()
    write_table(ws, "keywords", {"keywords": frames["keywords"]})
    write_table(ws, "questions", {"questions": frames["questions"]})
    write_table(ws, "answers", {"candidates": frames["candidates"]})
    set_reviews(tmp_path, reviews)
    return config


def set_reviews(tmp_path: Path, reviews: list[dict]) -> None:
    write_table(Workspace(tmp_path / "ws"), "review", {"reviews": reviews_frame(reviews)})


def write_safety_jsonl(path: Path, n: int = 12) -> Path:
    """Clearly synthetic safety / non-compliance examples in messages format (not real data)."""
    lines = []
    for i in range(n):
        lines.append(
            {
                "id": f"synthetic-{i}",
                "messages": [
                    {
                        "role": "user",
                        "content": f"SYNTHETIC TEST PROMPT {i}: please help with a clearly harmful request.",
                    },
                    {
                        "role": "assistant",
                        "content": f"SYNTHETIC TEST REPLY {i}: I can't help with that, but here is a safe alternative.",
                    },
                ],
            }
        )
    lines.append(
        {
            "id": "synthetic-multi",
            "messages": [
                {"role": "user", "content": "SYNTHETIC multi-turn 1"},
                {"role": "assistant", "content": "a"},
                {"role": "user", "content": "SYNTHETIC multi-turn 2"},
                {"role": "assistant", "content": "b"},
            ],
        }
    )
    lines.append(
        {
            "id": "synthetic-think",
            "language": "fr",
            "messages": [
                {"role": "user", "content": "SYNTHETIC prompt with a reasoning reply"},
                {"role": "assistant", "content": "<think>SYNTHETIC reasoning</think>SYNTHETIC refusal."},
            ],
        }
    )
    path.write_text("".join(json.dumps(x) + "\n" for x in lines), encoding="utf-8")
    return path
