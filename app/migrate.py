"""`python -m app.migrate`: bring the database of DATABASE_URL up to the newest schema."""

import os

from dotenv import load_dotenv

from app.db import upgrade

if __name__ == "__main__":
    load_dotenv()
    upgrade(os.environ.get("DATABASE_URL") or "sqlite:///instance/backend.db")
