"""`python -m app.store.migrate`: bring the database of DATABASE_URL up to the newest schema."""

import os
import sys

from dotenv import load_dotenv

from app.environment import DATABASE_URL, ConfigError
from app.store.schema import prepare

if __name__ == "__main__":
    load_dotenv()
    try:
        prepare(DATABASE_URL.read(os.environ))
    except ConfigError as error:
        print(f"configuration error: {error}", file=sys.stderr)
        sys.exit(3)
