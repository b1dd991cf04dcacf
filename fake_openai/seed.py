"""The offline upstream's example knowledge: the files of a directory, in one vector store of a known ID.

The dev server (`make run` with no key) gives its `curator` type this store, so that a run
there searches and cites something. A fake-only convenience: OpenAI chooses its own IDs.
"""

from __future__ import annotations

from pathlib import Path

from .files import StoredFile
from .vector_stores import VectorStore, add_file

EXAMPLE_STORE_ID = "vs_offline_examples"


def seed_knowledge(fake, directory: Path, store_id: str = EXAMPLE_STORE_ID) -> None:
    """Upload every `*.md` file of `directory` (purpose `assistants`) into a new store `store_id`."""
    paths = sorted(Path(directory).glob("*.md"))
    if not paths:
        return
    with fake.lock:
        store = VectorStore(fake.now(), name="example knowledge")
        store.id = store_id
        fake.vector_stores[store_id] = store
        for path in paths:
            stored = StoredFile(path.name, "assistants", path.read_bytes(), fake.now(), None)
            fake.files[stored.id] = stored
            add_file(fake, store, stored)
