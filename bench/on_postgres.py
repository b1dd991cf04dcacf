"""`python -m bench.on_postgres [bench options]`: the benchmark with PostgreSQL as the store.

Starts a throwaway PostgreSQL cluster on this machine (harness/servers.py, as the tests do),
makes a database, and runs `python -m bench` with `DATABASE_URL` pointing at it and the
options given (every width step then shares that one database):

    python -m bench.on_postgres --strategies poll,stream --phases width --variants prepared \\
        --width-steps 1000,4000 --no-publish --out bench/out/postgres
"""

from __future__ import annotations

import subprocess
import sys

from bench import procs
from harness.servers import PostgresServer


def main(argv=None) -> None:
    args = sys.argv[1:] if argv is None else argv
    server = PostgresServer()
    server.start()
    try:
        url = server.new_database()
        command = [sys.executable, "-m", "bench", *args, "--env", f"DATABASE_URL={url}"]
        raise SystemExit(subprocess.run(command, cwd=procs.ROOT).returncode)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
