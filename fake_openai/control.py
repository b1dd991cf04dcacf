"""The control API under /_fake (JSON, no auth) for out-of-process tests and the benchmark."""

from flask import request


def register(app, fake, read_body):
    """Add the /_fake routes to `app`; `read_body` parses a request's JSON object."""

    @app.get("/_fake/stats")
    def fake_stats():
        return fake.stats()

    @app.get("/_fake/usage")
    def fake_usage():
        return fake.usage_report()

    @app.get("/_fake/runs/<job_id>")
    def fake_run_info(job_id):
        return fake.run_info(job_id)

    @app.get("/_fake/last_body")
    def fake_last_body():
        return {"route": request.args.get("route"), "body": fake.last_body(request.args.get("route"))}

    @app.get("/_fake/config")
    def fake_get_config():
        with fake.lock:
            return fake.config.as_dict()

    @app.post("/_fake/config")
    def fake_set_config():
        values = read_body()
        with fake.lock:
            fake.config.update(values)
            return fake.config.as_dict()

    @app.post("/_fake/reset")
    def fake_reset():
        fake.reset()
        return {"reset": True}

    @app.post("/_fake/forget/<response_id>")
    def fake_forget(response_id):
        fake.forget(response_id)
        return {"id": response_id, "forgotten": True}
