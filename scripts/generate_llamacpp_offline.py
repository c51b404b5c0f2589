"""Generate responses for the refusal eval set with llama-cpp-python directly (no server), for a
machine without network access that has the GGUF files: same model files, same chat template and
sampling (temperature 0) as scripts/llm-server.sh serves.

    python scripts/generate_llamacpp_offline.py PROMPTS.jsonl MODEL.gguf MODEL_NAME OUT.jsonl [--max-tokens 200] [--threads 8]
"""

import argparse
import json
import time

from llama_cpp import Llama


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("prompts")
    ap.add_argument("model")
    ap.add_argument("model_name")
    ap.add_argument("out")
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--threads", type=int, default=8)
    args = ap.parse_args()
    llm = Llama(model_path=args.model, n_ctx=4096, n_threads=args.threads, verbose=False)
    rows = [json.loads(line) for line in open(args.prompts, encoding="utf-8") if line.strip()]
    started = time.time()
    with open(args.out, "w", encoding="utf-8") as f:
        for row in rows:
            out = llm.create_chat_completion(messages=[{"role": "user", "content": row["prompt"]}],
                                             temperature=0.0, max_tokens=args.max_tokens)
            choice = out["choices"][0]
            f.write(json.dumps(row | {"model": args.model_name, "response": choice["message"]["content"],
                                      "finish_reason": choice["finish_reason"]}, ensure_ascii=False) + "\n")
            f.flush()
    print(f"{args.model_name}: {len(rows)} responses in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
