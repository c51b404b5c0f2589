"""Build the refusal detector's evaluation set from real model outputs.

    uv run python scripts/label_refusals.py generate --model-name qwen2.5-coder-0.5b-instruct \
        --base-url http://127.0.0.1:8081/v1 [--per-source 20] [--max-tokens 200]
        -> appends unlabeled rows to data/refusal_eval/responses.jsonl (one per prompt x model)
    uv run python scripts/label_refusals.py prompts --model-name NAME --out PROMPTS.jsonl
        -> the same sample as a file, for scripts/generate_llamacpp_offline.py on a machine without
           the server (how the committed responses were made; see data/refusal_eval/SOURCE.md)
    uv run python scripts/label_refusals.py add-r1
        -> appends the two real DeepSeek-R1 answers from shared/data/r1_samples
    uv run python scripts/label_refusals.py merge
        -> joins hand labels (data/refusal_eval/labels.tsv: id, refused, kind, note) with the
           responses into data/refusal_eval/labeled.jsonl, with a fixed tune/holdout split

Prompts are a fixed random sample (seeded) of the shared sets: deccp censored + uncensored,
china_politics_eval en + zh, XSTest safe + unsafe, plus 20 hand-written prompts in the other
target languages (data/refusal_eval/prompts_multilingual.jsonl). Labels are written by a person
reading each response; nothing here derives a label from the detector.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import sys
from pathlib import Path

import polars as pl

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"  # shared/ beside the checkout; --shared names another
EVAL_DIR = REPO / "data" / "refusal_eval"
RESPONSES = EVAL_DIR / "responses.jsonl"
LABELS = EVAL_DIR / "labels.tsv"
LABELED = EVAL_DIR / "labeled.jsonl"
HOLDOUT_SHARE = 0.3


def _lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


def sample_prompts(shared: Path, per_source: int, seed: int = 4) -> list[dict]:
    rng = random.Random(seed)
    sources: dict[str, list[tuple[str, str]]] = {
        "deccp/censored": [(p, "en") for p in _lines(shared / "deccp" / "censored.txt")],
        "deccp/uncensored": [(p, "en") for p in _lines(shared / "deccp" / "uncensored.txt")],
        "china_politics_eval/en": [(p, "en") for p in _lines(shared / "china_politics_eval" / "en-US.txt")],
        "china_politics_eval/zh": [(p, "zh") for p in _lines(shared / "china_politics_eval" / "zh-CN.txt")],
    }
    with open(shared / "xstest" / "xstest_prompts.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    sources["xstest/safe"] = [(r["prompt"], "en") for r in rows if r["label"] == "safe"]
    sources["xstest/unsafe"] = [(r["prompt"], "en") for r in rows if r["label"] == "unsafe"]
    picked = []
    for source, items in sources.items():
        for prompt, lang in rng.sample(items, min(per_source, len(items))):
            picked.append({"prompt": prompt, "language": lang, "source": source})
    for line in _lines(EVAL_DIR / "prompts_multilingual.jsonl"):
        obj = json.loads(line)
        picked.append({"prompt": obj["prompt"], "language": obj["language"], "source": "hand-written/multilingual"})
    return picked


def row_id(model: str, prompt: str) -> str:
    return hashlib.sha256(f"{model}\x1f{prompt}".encode()).hexdigest()[:12]


def generate(args: argparse.Namespace) -> None:
    from curate.config import EndpointConfig
    from curate.llm import complete_frame
    from curate.progress import progress_bar

    prompts = sample_prompts(Path(args.shared), args.per_source)
    done = set()
    if RESPONSES.exists():
        done = {json.loads(ln)["id"] for ln in RESPONSES.read_text(encoding="utf-8").splitlines() if ln.strip()}
    todo = [p | {"id": row_id(args.model_name, p["prompt"])} for p in prompts]
    todo = [p for p in todo if p["id"] not in done][: args.limit or None]
    if not todo:
        print("nothing to generate")
        return
    endpoint = EndpointConfig(base_url=args.base_url, model="local", max_concurrency=1, timeout_s=300,
                              temperature=0.0, max_tokens=args.max_tokens)
    # Interleave sources so that a run stopped early still covers all of them; append per chunk so
    # a stopped run keeps what it generated.
    random.Random(7).shuffle(todo)
    EVAL_DIR.mkdir(parents=True, exist_ok=True)
    written = 0
    with progress_bar(f"generate {args.model_name}", len(todo)) as advance:
        for start in range(0, len(todo), args.chunk):
            chunk = todo[start : start + args.chunk]
            requests = pl.DataFrame({"request_id": [p["id"] for p in chunk], "prompt": [p["prompt"] for p in chunk]})
            results = complete_frame(requests, endpoint, stage="refusal_eval", cache=None, progress=advance)
            with open(RESPONSES, "a", encoding="utf-8") as f:
                for p, r in zip(chunk, results.iter_rows(named=True), strict=True):
                    if r["status"] != "ok":
                        print(f"skip {p['id']}: {r['error']}", file=sys.stderr)
                        continue
                    f.write(json.dumps({"id": p["id"], "model": args.model_name, "source": p["source"],
                                        "language": p["language"], "prompt": p["prompt"], "response": r["content"],
                                        "finish_reason": r["finish_reason"]}, ensure_ascii=False) + "\n")
                    written += 1
    print(f"appended {written} rows to {RESPONSES}")


def write_prompts(args: argparse.Namespace) -> None:
    """The prompt file for scripts/generate_llamacpp_offline.py (machines without the server)."""
    rows = sample_prompts(Path(args.shared), args.per_source)
    with open(args.out, "w", encoding="utf-8") as f:
        for p in rows:
            f.write(json.dumps(p | {"id": row_id(args.model_name, p["prompt"])}, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} prompts to {args.out}")


def add_r1_samples(args: argparse.Namespace) -> None:
    """The two real DeepSeek-R1 answers (arena-hard) as 'answered' examples."""
    done = set()
    if RESPONSES.exists():
        done = {json.loads(ln)["id"] for ln in RESPONSES.read_text(encoding="utf-8").splitlines() if ln.strip()}
    path = Path(args.shared) / "r1_samples" / "arena_hard_v2_deepseek_r1_sample.jsonl"
    with open(RESPONSES, "a", encoding="utf-8") as f:
        for line in _lines(path):
            obj = json.loads(line)
            prompt = obj["messages"][0]["content"]
            rid = row_id("deepseek-r1", prompt)
            if rid in done:
                continue
            f.write(json.dumps({"id": rid, "model": "deepseek-r1", "source": "r1_samples/arena_hard_v2", "language": "en",
                                "prompt": prompt, "response": obj["messages"][1]["content"]["answer"], "finish_reason": "stop"},
                               ensure_ascii=False) + "\n")


def split_of(rid: str) -> str:
    """Fixed by the id's hash, so the holdout never depends on what the detector does."""
    return "holdout" if int(hashlib.sha256(f"split:{rid}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < HOLDOUT_SHARE else "tune"


def merge(args: argparse.Namespace) -> None:
    responses = {json.loads(ln)["id"]: json.loads(ln) for ln in RESPONSES.read_text(encoding="utf-8").splitlines() if ln.strip()}
    labels = {}
    with open(LABELS, encoding="utf-8", newline="") as f:
        for n, row in enumerate(csv.DictReader(f, delimiter="\t"), start=2):
            if row["id"] not in responses:
                sys.exit(f"{LABELS}:{n}: id {row['id']} is not in {RESPONSES}")
            if row["refused"] not in ("true", "false"):
                sys.exit(f"{LABELS}:{n}: refused must be true or false")
            kind = row["kind"] or None
            if (row["refused"] == "true") != (kind is not None):
                sys.exit(f"{LABELS}:{n}: kind must be set exactly when refused is true")
            labels[row["id"]] = {"refused": row["refused"] == "true", "kind": kind, "note": row.get("note") or None}
    # deccp has no language column and mixes English and Chinese lines: detect from the prompt.
    from curate.text.langid import detect_language

    for r in responses.values():
        if r["source"].startswith("deccp/"):
            r["language"] = detect_language(r["prompt"])[0]
    missing = [i for i in responses if i not in labels]
    with open(LABELED, "w", encoding="utf-8") as f:
        for rid, r in responses.items():
            if rid not in labels:
                continue
            f.write(json.dumps(r | {"label": labels[rid], "split": split_of(rid)}, ensure_ascii=False) + "\n")
    print(f"wrote {len(labels)} labeled rows to {LABELED}; {len(missing)} responses still unlabeled")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--model-name", required=True, help="Name recorded in the rows (the server serves it as 'local').")
    g.add_argument("--base-url", default="http://127.0.0.1:8080/v1")
    g.add_argument("--per-source", type=int, default=20)
    g.add_argument("--max-tokens", type=int, default=200)
    g.add_argument("--limit", type=int, default=0, help="Generate at most this many (0 = all).")
    g.add_argument("--chunk", type=int, default=5, help="Append to the file after this many prompts.")
    g.add_argument("--shared", default=str(SHARED))
    w = sub.add_parser("prompts")
    w.add_argument("--model-name", required=True)
    w.add_argument("--per-source", type=int, default=15)
    w.add_argument("--out", required=True)
    w.add_argument("--shared", default=str(SHARED))
    r = sub.add_parser("add-r1")
    r.add_argument("--shared", default=str(SHARED))
    sub.add_parser("merge")
    args = parser.parse_args()
    {"generate": generate, "prompts": write_prompts, "add-r1": add_r1_samples, "merge": merge}[args.cmd](args)


if __name__ == "__main__":
    main()
