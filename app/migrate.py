"""`python -m app.migrate`: bring the database of DATABASE_URL up to the newest schema."""

import os

from dotenv import load_dotenv

from app.environment import DATABASE_URL
from app.store.db import upgrade

if __name__ == "__main__":
    load_dotenv()
    upgrade(DATABASE_URL.read(os.environ))
