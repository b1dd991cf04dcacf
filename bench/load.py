"""The load generator, run as its own process: `python -m bench.load SPEC.json OUT.json`.

Each run is the legacy frontend's flow on one keep-alive connection: create a
thread, add a user message that scripts the fake run's duration, then POST the
run and wait for the answer. The client never retries. The spec gives either a
concurrency (start the next run when one ends) or a launch offset per run.

A run with a `thread_id` starts at its POST .../runs: its thread and message were
made before (`python -m bench.load --prepare SPEC.json OUT.json` makes them for
every run of the spec, `concurrency` at a time, and writes the thread ids).
Each run speaks as one of the spec's `tokens`, in turn. With `"stream": true` in the spec,
each POST .../runs asks for a streamed answer and reads its events to `[DONE]`.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time


class HttpError(Exception):
    """A step of the flow did not answer 200."""


class Connection:
    """One keep-alive HTTP/1.1 connection to the backend, used by one run's steps one after another.

    Plain asyncio streams: the client must stay light next to a backend holding thousands
    of runs on the same two cores (an httpx2 client per run cost the client ~20 ms of CPU a run).
    """

    def __init__(self, host: str, port: int, token: str | None):
        self.host, self.port = host, port
        self.head = f"Host: {host}:{port}\r\nAccept: application/json\r\n"
        if token:
            self.head += f"Authorization: Bearer {token}\r\n"
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = self.reader = None

    async def _send(self, method: str, path: str, body: dict | None) -> tuple[int, dict[str, str]]:
        """Send one request; read the status line and the headers (lower-case names)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        data = json.dumps(body).encode() if body is not None else b""
        head = f"{method} {path} HTTP/1.1\r\n{self.head}"
        head += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n"
        self.writer.write(head.encode() + data)
        status = int((await self.reader.readline()).split()[1])
        headers = {}
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip().lower()
        return status, headers

    async def _body(self, headers: dict[str, str]) -> bytes:
        if "chunked" in headers.get("transfer-encoding", ""):
            payload = await self._chunks()
        else:
            payload = await self.reader.readexactly(int(headers.get("content-length", 0)))
        if "close" in headers.get("connection", ""):
            self.close()
        return payload

    async def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        """Send one request and read the whole answer: (status, JSON body)."""
        status, headers = await self._send(method, path, body)
        payload = await self._body(headers)
        return status, json.loads(payload) if payload else {}

    async def events(self, path: str, body: dict):
        """POST and yield the answer as it comes: first `("status", (status, JSON body or None))`, then,
        for a `text/event-stream`, each event as `(name, data)` (data parsed as JSON, or the raw text)."""
        status, headers = await self._send("POST", path, body)
        if not headers.get("content-type", "").startswith("text/event-stream"):
            payload = await self._body(headers)
            yield "status", (status, json.loads(payload) if payload else {})
            return
        yield "status", (status, None)
        buffer = b""
        while chunk := await self._chunk():
            buffer += chunk
            while b"\n\n" in buffer:
                block, buffer = buffer.split(b"\n\n", 1)
                fields = dict(line.split(": ", 1) for line in block.decode().split("\n") if ": " in line)
                data = fields.get("data", "")
                yield fields.get("event", "message"), json.loads(data) if data.startswith("{") else data
        if "close" in headers.get("connection", ""):
            self.close()

    async def _chunk(self) -> bytes:
        """The next chunk of a chunked body; b"" after the last one."""
        size = int((await self.reader.readline()).split(b";")[0], 16)
        if not size:
            await self.reader.readline()
            return b""
        chunk = await self.reader.readexactly(size)
        await self.reader.readline()
        return chunk

    async def _chunks(self) -> bytes:
        parts = []
        while part := await self._chunk():
            parts.append(part)
        return b"".join(parts)


def _client(spec: dict, token: str | None) -> Connection:
    return Connection(spec["host"], spec["port"], token)


async def _step(client: Connection, what: str, method: str, path: str, body: dict | None) -> dict:
    status, answer = await client.request(method, path, body)
    if status != 200:
        raise HttpError(f"{what}: HTTP {status} {str(answer)[:200]}")
    return answer


def _token(spec: dict, index: int) -> str | None:
    tokens = spec.get("tokens") or [None]
    return tokens[index % len(tokens)]


async def one_run(spec: dict, run: dict, index: int) -> dict:
    """Run the whole flow once (from the POST .../runs on a prepared thread); the record says
    when each step ended and how it went."""
    prefix = spec["prefix"]
    record: dict = {"duration": run["duration"], "launched": time.time()}
    async with _client(spec, _token(spec, index)) as client:
        await _flow(client, prefix, run, record, spec.get("stream", False), spec.get("run_body") or {})
    return record


async def _prepare(client: Connection, prefix: str, duration: float) -> str:
    thread = await _step(client, "thread", "POST", f"{prefix}/threads", {})
    content = f"q [fake duration={duration:.3f}]"
    body = {"role": "user", "content": content}
    await _step(client, "message", "POST", f"{prefix}/threads/{thread['id']}/messages", body)
    return thread["id"]


async def _flow(client: Connection, prefix: str, run: dict, record: dict, stream: bool, body: dict) -> None:
    try:
        thread_id = run.get("thread_id") or await _prepare(client, prefix, run["duration"])
        record["thread_id"] = thread_id
        record["run_sent"] = time.time()
        if stream:
            await _streamed(client, f"{prefix}/threads/{thread_id}/runs", record)
            return
        status, answer = await client.request("POST", f"{prefix}/threads/{thread_id}/runs", body)
        record["done"] = time.time()  # the client has the whole answer now
        record["http_status"] = status
        run = answer.get("run", answer)
        record["run_id"] = run.get("id")
        record["run_status"] = run.get("status")
        record["ok"] = status == 200 and run.get("status") == "completed"
        if not record["ok"]:
            record["error"] = f"run: HTTP {status} {answer.get('error', run.get('status'))}"
    except (OSError, asyncio.IncompleteReadError, HttpError, ValueError, KeyError, IndexError) as exc:
        record["ok"] = False
        record["error"] = f"{type(exc).__name__}: {exc}"[:300]


async def _streamed(client: Connection, path: str, record: dict) -> None:
    """POST the run with `"stream": true` and read its events to `[DONE]`. `done` is the instant the
    run's final event arrived (so the lag is measured to it); `first_byte` and `first_delta` are when
    the answer's head and its first text arrived; `text` is the reply the deltas add up to."""
    text, final, closed = [], None, False
    async for name, data in client.events(path, {"stream": True}):
        now = time.time()
        if name == "status":
            record["first_byte"] = now
            record["http_status"], answer = data
            if answer is not None:
                run = answer.get("run", answer)
                record["run_id"] = run.get("id")
                record["error"] = f"run: HTTP {data[0]} {answer.get('error', run.get('status'))}"
        elif name == "thread.run.created":
            record["run_id"] = data["id"]
        elif name == "thread.message.delta":
            record.setdefault("first_delta", now)
            text += [part["text"]["value"] for part in data["delta"]["content"] if part["type"] == "text"]
        elif name.startswith("thread.run.") and data.get("status") not in ("queued", "in_progress", "cancelling"):
            record["done"], final = now, data["status"]
        elif name == "error":
            record["error"] = f"run: error event {data['error'].get('code')}"
        elif name == "done":
            closed = True
    record["run_status"] = final
    record["text"] = "".join(text)
    record["ok"] = record["http_status"] == 200 and final == "completed" and closed
    if not record["ok"]:
        record.setdefault("error", f"run: final event {final}, [DONE] {'seen' if closed else 'missing'}")


async def _bounded(spec: dict, run: dict, index: int) -> dict:
    try:
        return await asyncio.wait_for(one_run(spec, run, index), spec["timeout"])
    except TimeoutError:
        return {"duration": run["duration"], "ok": False, "error": f"client timeout after {spec['timeout']}s"}


async def run_all(spec: dict) -> list[dict]:
    """Every run of the spec: `concurrency` at a time, or each at its `at` offset (seconds)."""
    runs = spec["runs"]
    if spec.get("concurrency"):
        gate = asyncio.Semaphore(spec["concurrency"])

        async def gated(run: dict, index: int) -> dict:
            async with gate:
                return await _bounded(spec, run, index)

        return await asyncio.gather(*(gated(r, i) for i, r in enumerate(runs)))

    start = time.monotonic()

    async def scheduled(run: dict, index: int) -> dict:
        await asyncio.sleep(max(0.0, start + run["at"] - time.monotonic()))
        return await _bounded(spec, run, index)

    return await asyncio.gather(*(scheduled(r, i) for i, r in enumerate(runs)))


async def prepare_all(spec: dict) -> list[str]:
    """A thread with its scripted message for every run of the spec, `concurrency` at a time."""
    gate = asyncio.Semaphore(spec.get("concurrency") or 50)

    async def one(run: dict, index: int) -> str:
        async with gate, _client(spec, _token(spec, index)) as client:
            return await _prepare(client, spec["prefix"], run["duration"])

    return await asyncio.gather(*(one(r, i) for i, r in enumerate(spec["runs"])))


def main(argv: list[str]) -> None:
    """Read the spec, run it (or prepare its threads), write the records and this process's CPU time."""
    prepare = argv[0] == "--prepare"
    spec_path, out_path = argv[1:] if prepare else argv
    spec = json.loads(open(spec_path).read())
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if prepare:
        with open(out_path, "w") as f:
            json.dump(asyncio.run(prepare_all(spec)), f)
        return
    started = time.time()
    records = asyncio.run(run_all(spec))
    times = os.times()
    out = {"records": records, "started": started, "ended": time.time(), "cpu_seconds": times.user + times.system}
    with open(out_path, "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main(sys.argv[1:])
