"""The upstream's Files and Vector Stores APIs (`/v1/files`, `/v1/vector_stores`), the same on both engines.

Every call goes through the lean client (upstream_http), so its failures are the
engine errors of `app.contract`. Nothing here checks ownership: app/knowledge.py
does, before any call is made.
"""

from __future__ import annotations

from typing import BinaryIO

from app.engines.upstream_http import UpstreamHTTP

# The header by which the upstream paces the SDK's vector store polls; passed on to the client.
POLL_HEADER = "openai-poll-after-ms"


class KnowledgeUpstream:
    """Files and vector stores upstream."""

    def __init__(self, http: UpstreamHTTP, timeout: float, upload_timeout: float):
        self.http = http
        self.timeout = timeout
        self.upload_timeout = upload_timeout

    # files

    def upload_file(self, filename: str, stream: BinaryIO, content_type: str, purpose: str) -> dict:
        """Send a file to `POST /files`; the File object."""
        fields = {"purpose": purpose}
        data, _ = self.http.upload("/files", fields, (filename, stream, content_type), timeout=self.upload_timeout)
        return data

    def file(self, file_id: str) -> dict:
        return self.http.get(f"/files/{file_id}", timeout=self.timeout)[0]

    def delete_file(self, file_id: str) -> dict:
        return self.http.delete(f"/files/{file_id}", timeout=self.timeout)[0]

    # vector stores

    def create_vector_store(self, body: dict) -> dict:
        return self.http.post("/vector_stores", body, timeout=self.timeout)[0]

    def vector_store(self, store_id: str, timeout: float | None = None) -> dict:
        return self.http.get(f"/vector_stores/{store_id}", timeout=timeout or self.timeout)[0]

    def delete_vector_store(self, store_id: str) -> dict:
        return self.http.delete(f"/vector_stores/{store_id}", timeout=self.timeout)[0]

    # a vector store's files; (answer, poll hint in ms or None) where the SDK polls

    def add_vector_store_file(self, store_id: str, body: dict) -> tuple[dict, str | None]:
        data, headers = self.http.post(f"/vector_stores/{store_id}/files", body, timeout=self.timeout)
        return data, headers.get(POLL_HEADER)

    def vector_store_files(self, store_id: str, params: dict, timeout: float | None = None) -> dict:
        return self.http.get(f"/vector_stores/{store_id}/files", params, timeout=timeout or self.timeout)[0]

    def vector_store_file(self, store_id: str, file_id: str) -> tuple[dict, str | None]:
        data, headers = self.http.get(f"/vector_stores/{store_id}/files/{file_id}", timeout=self.timeout)
        return data, headers.get(POLL_HEADER)

    def delete_vector_store_file(self, store_id: str, file_id: str) -> dict:
        return self.http.delete(f"/vector_stores/{store_id}/files/{file_id}", timeout=self.timeout)[0]
