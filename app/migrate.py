"""`python -m app.migrate`: bring the database of DATABASE_URL up to the newest schema."""

import os
import sys

from dotenv import load_dotenv

from app.schema import prepare
from app.settings import ConfigError

if __name__ == "__main__":
    load_dotenv()
    try:
        prepare(os.environ.get("DATABASE_URL") or "sqlite:///instance/backend.db")
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        sys.exit(3)
