"""A minimal asyncio HTTP/1.1 client: one keep-alive connection, JSON in and out.

The load generator opens thousands of these at once; aiohttp is not installed and
a thread per connection would make the client, not the server, the thing measured.
"""

from __future__ import annotations

import asyncio
import json


class HttpError(Exception):
    """The connection broke or the answer was not HTTP/1.1 as expected."""


class Connection:
    """One connection to `host:port`; requests on it go one after another."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self.reader = reader
        self.writer = writer
        self.host = host

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port, limit=2**20)
        return cls(reader, writer, f"{host}:{port}")

    async def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        """Send one request and read the whole answer: (status, body bytes)."""
        payload = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\nAccept: application/json\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
        self.writer.write(head.encode() + b"\r\n" + payload)
        await self.writer.drain()
        return await self._answer()

    async def _answer(self) -> tuple[int, bytes]:
        try:
            status_line = await self.reader.readuntil(b"\r\n")
            headers = await self.reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise HttpError("connection closed before the answer") from exc
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise HttpError(f"not an HTTP answer: {status_line[:40]!r}")
        fields = {}
        for line in headers.decode("latin-1").split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                fields[name.strip().lower()] = value.strip()
        try:
            if "content-length" in fields:
                data = await self.reader.readexactly(int(fields["content-length"]))
            elif fields.get("transfer-encoding", "").lower() == "chunked":
                data = await self._chunked()
            else:
                data = await self.reader.read()
        except asyncio.IncompleteReadError as exc:
            raise HttpError("connection closed inside the body") from exc
        return int(parts[1]), data

    async def _chunked(self) -> bytes:
        data = bytearray()
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await self.reader.readexactly(size + 2)
            if size == 0:
                return bytes(data)
            data += chunk[:-2]

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass
