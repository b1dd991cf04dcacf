"""gunicorn settings of the benchmark's servers; the command line sets the rest.

Passed with -c so that a gunicorn.conf.py elsewhere never changes what is measured.
"""

# Longer than RUN_TIMEOUT_SECONDS, so that a restart never cuts a waiting run.
graceful_timeout = 90
timeout = 120
keepalive = 5
accesslog = None
loglevel = "warning"
