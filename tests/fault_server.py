"""FAULT INJECTOR: a tiny OpenAI-shaped HTTP server that misbehaves on purpose.

It exists only to produce what a real model server will not produce on demand: 429 with
Retry-After, 5xx, slow responses past the client's timeout, dropped connections, garbage bodies,
non-retryable 400s, and a fixed latency for throughput measurements. Its successful replies are
canned text, never a stand-in for a model: every test of real model behaviour uses the llama.cpp
server (tests/fixtures/llm_server.py).

It also counts what a client's flow control is supposed to bound, on the server side: requests in
flight at once (`max_in_flight`, meaningful with a fixed `latency_s`) and when each request
arrived (`arrivals`: `time.monotonic()` and the reply chosen; the same clock as a client in the
same process, e.g. to check a requests/min budget or a pause after a 429).

Faults are chosen per distinct request body, either by a deterministic `plan` (the k-th attempt
of each request gets plan[k]; after the plan, requests succeed) or at random by `rates`.
Plan steps: "ok", "429", "500", "503", "slow", "drop", "garbage", "garbage_json", "no_choices",
"400", "401", "context", "hold" (answered only once `release_held()` is called), or a canned
success: "reply:<text>", "reasoning:<reasoning>|<answer>" (separate reasoning_content field),
"cut:<text>" (finish_reason "length"). "{request}" in a reply becomes a tag of the request body, so
replies to different requests differ.

    python -m tests.fault_server --port 0 --latency 0.5      # prints "PORT <n>" when listening
    GET /stats, POST /config (JSON: plan, rates, latency, reply, ...), POST /reset
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FaultConfig:
    plan: list[str] = field(default_factory=list)
    # Per-request plans: a request whose body contains the marker follows that plan instead.
    plans: dict[str, list[str]] = field(default_factory=dict)
    # Answer 400 to any request that carries response_format (a server without schema support).
    reject_response_format: bool = False
    rates: dict[str, float] = field(default_factory=dict)
    latency_s: float = 0.0
    slow_s: float = 5.0
    retry_after: str | None = "0"
    reply: str = "ok"
    seed: int = 0
    # Keep every request body in `bodies` (tests read them). A long benchmark turns it off: 2.8M judge
    # prompts of ~5 KB would hold ~13 GB in the process that runs the server.
    keep_bodies: bool = True


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests", 500: "Internal Server Error",
            503: "Service Unavailable"}


class FaultServer:
    def __init__(self, config: FaultConfig | None = None, host: str = "127.0.0.1", port: int = 0):
        self.config = config or FaultConfig()
        self.host, self.port = host, port
        self._rng = random.Random(self.config.seed)
        self.reset()
        self._server: asyncio.AbstractServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # -- bookkeeping ---------------------------------------------------------------------
    def reset(self) -> None:
        self.attempts: Counter[str] = Counter()   # per request body: times seen
        self.completed: Counter[str] = Counter()  # per request body: 200 replies fully sent
        self.faults: Counter[str] = Counter()
        self.requests = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.connections = 0  # TCP connections accepted: how many a client's pool opened
        self.started_at = time.time()
        self.last_authorization: str | None = None
        self.bodies: list[bytes] = []  # every chat request, in arrival order (unless keep_bodies is off)
        self.arrivals: list[tuple[float, str]] = []  # (time.monotonic(), reply kind) per chat request
        self._held = asyncio.Event()  # "hold" requests wait for it

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "distinct": len(self.attempts),
            "completed": sum(self.completed.values()),
            "completed_distinct": len(self.completed),
            "repeated_completed": sum(n - 1 for n in self.completed.values() if n > 1),
            "faults": dict(self.faults),
            "max_in_flight": self.max_in_flight,
            "connections": self.connections,
        }

    # -- serving -------------------------------------------------------------------------
    def _choose(self, key: str, body: bytes) -> str:
        k = self.attempts[key]
        self.attempts[key] += 1
        plan = self.config.plan
        for marker, marked_plan in self.config.plans.items():
            if marker.encode() in body:
                plan = marked_plan
        if k < len(plan):
            return plan[k]
        for kind, rate in self.config.rates.items():
            if self._rng.random() < rate:
                return kind
        return "ok"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
                keep = await self._route(method, path, body, writer, headers)
                if not keep:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    def _send(self, writer: asyncio.StreamWriter, status: int, payload: bytes, content_type: str = "application/json",
              extra: dict[str, str] | None = None) -> None:
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}", f"Content-Type: {content_type}",
                f"Content-Length: {len(payload)}", "Connection: keep-alive"]
        head += [f"{k}: {v}" for k, v in (extra or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)

    async def _route(self, method: str, path: str, body: bytes, writer: asyncio.StreamWriter, headers: dict[str, str]) -> bool:
        if method == "GET" and path.endswith("/stats"):
            self._send(writer, 200, json.dumps(self.stats()).encode())
        elif method == "POST" and path.endswith("/reset"):
            self.reset()
            self._send(writer, 200, b"{}")
        elif method == "POST" and path.endswith("/config"):
            for k, v in json.loads(body or b"{}").items():
                setattr(self.config, k, v)
            self._send(writer, 200, b"{}")
        elif method == "GET" and path.endswith("/models"):
            self._send(writer, 200, json.dumps({"object": "list", "data": [{"id": "fault-injector", "object": "model"}]}).encode())
        elif method == "POST" and path.endswith("/chat/completions"):
            return await self._completion(body, writer, headers)
        else:
            self._send(writer, 404, b'{"error": {"message": "not found"}}')
        await writer.drain()
        return True

    async def _completion(self, body: bytes, writer: asyncio.StreamWriter, headers: dict[str, str]) -> bool:
        self.requests += 1
        if self.config.keep_bodies:
            self.bodies.append(body)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            key = hashlib.sha256(body).hexdigest()
            kind = self._choose(key, body)
            if self.config.reject_response_format and b'"response_format"' in body:
                kind = "reject_schema"
            self.arrivals.append((time.monotonic(), kind))
            self.last_authorization = headers.get("authorization")
            if kind != "ok" and not kind.startswith(("reply:", "reasoning:", "cut:")):
                self.faults[kind] += 1
            if self.config.latency_s:
                await asyncio.sleep(self.config.latency_s)
            if kind == "slow":
                await asyncio.sleep(self.config.slow_s)
            if kind == "hold":
                await self._held.wait()
            if kind == "drop":
                writer.transport.abort()
                return False
            if kind in ("429", "503"):
                extra = {"Retry-After": self.config.retry_after} if self.config.retry_after is not None else {}
                self._send(writer, int(kind), b'{"error": {"message": "overloaded, slow down"}}', extra=extra)
            elif kind == "500":
                self._send(writer, 500, b'{"error": {"message": "internal error"}}')
            elif kind == "401":
                # Real APIs echo part of a wrong key; this one echoes all of it, the worst case.
                message = f"Incorrect API key provided: {headers.get('authorization', '')}"
                self._send(writer, 401, json.dumps({"error": {"message": message}}).encode())
            elif kind == "reject_schema":
                self._send(writer, 400, b'{"error": {"message": "response_format of type json_schema is not supported"}}')
            elif kind == "400":
                self._send(writer, 400, b'{"error": {"message": "invalid request: bad parameter"}}')
            elif kind == "context":
                self._send(writer, 400, b'{"error": {"message": "This model\'s maximum context length is 2048 tokens"}}')
            elif kind == "garbage":
                self._send(writer, 200, b"<html>\x00\xff not json at all", content_type="text/html")
            elif kind == "garbage_json":
                self._send(writer, 200, b'{"choices": [ {"message": ')
            elif kind == "no_choices":
                self._send(writer, 200, b'{"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": []}')
            else:
                reply = kind[len("reply:"):] if kind.startswith("reply:") else self.config.reply
                message: dict[str, Any] = {"role": "assistant", "content": reply}
                finish = "stop"
                if kind.startswith("reasoning:"):  # vLLM/DeepSeek shape: "reasoning:<reasoning>|<answer>"
                    reasoning, _, reply = kind[len("reasoning:"):].partition("|")
                    message = {"role": "assistant", "content": reply, "reasoning_content": reasoning}
                elif kind.startswith("cut:"):  # stopped by max_tokens: "cut:<content>"
                    reply, finish = kind[len("cut:"):], "length"
                    message = {"role": "assistant", "content": reply}
                message["content"] = reply = reply.replace("{request}", key[:8])  # a reply that differs per request
                request = json.loads(body)
                payload = {
                    "id": "fault-" + key[:12], "object": "chat.completion", "created": int(time.time()),
                    "model": request.get("model", "fault-injector"),
                    "choices": [{"index": 0, "finish_reason": finish, "message": message}],
                    "usage": {"prompt_tokens": len(body) // 4, "completion_tokens": max(1, len(reply) // 4),
                              "total_tokens": len(body) // 4 + max(1, len(reply) // 4)},
                }
                self._send(writer, 200, json.dumps(payload).encode())
                await writer.drain()
                self.completed[key] += 1
                return True
            await writer.drain()
            return True
        finally:
            self.in_flight -= 1

    def release_held(self) -> None:
        """Let every "hold" request (now and later) be answered; callable from any thread."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._held.set)
        else:
            self._held.set()

    # -- lifecycle -----------------------------------------------------------------------
    async def serve(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def start_in_thread(self) -> FaultServer:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fault-server", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop and self._server:
            async def close() -> None:
                self._server.close()
                handlers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
                for task in handlers:
                    task.cancel()
                await asyncio.gather(*handlers, return_exceptions=True)

            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def __enter__(self) -> FaultServer:
        return self.start_in_thread()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--plan", default="", help="comma-separated steps")
    args = parser.parse_args()
    server = FaultServer(FaultConfig(latency_s=args.latency, plan=[p for p in args.plan.split(",") if p]))

    async def run() -> None:
        await server.serve()
        print(f"PORT {server.port}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
