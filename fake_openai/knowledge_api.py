"""The HTTP routes of files, vector stores, run steps and the fake's assistants (logic in their modules)."""

from flask import Response, request

from . import files, knowledge, run_steps, vector_stores


def register(app, fake, read_body):
    """Add the /v1/files, /v1/vector_stores and run steps routes, and /_fake/assistants, to `app`."""

    def locked(operation, *args):
        with fake.lock:
            return operation(fake, *args)

    @app.post("/v1/files")
    def create_file():
        return locked(files.create_file, request.form, request.files)

    @app.get("/v1/files")
    def list_files():
        return locked(files.list_files, request.args)

    @app.get("/v1/files/<file_id>")
    def get_file(file_id):
        return locked(files.get_file, file_id)

    @app.delete("/v1/files/<file_id>")
    def delete_file(file_id):
        return locked(files.delete_file, file_id)

    @app.get("/v1/files/<file_id>/content")
    def file_content(file_id):
        return Response(locked(files.file_content, file_id), mimetype="application/octet-stream")

    @app.post("/v1/vector_stores")
    def create_store():
        return locked(vector_stores.create_store, read_body())

    @app.get("/v1/vector_stores")
    def list_stores():
        return locked(vector_stores.list_stores, request.args)

    @app.get("/v1/vector_stores/<store_id>")
    def get_store(store_id):
        return locked(vector_stores.get_store, store_id)

    @app.post("/v1/vector_stores/<store_id>")
    def update_store(store_id):
        return locked(vector_stores.update_store, store_id, read_body())

    @app.delete("/v1/vector_stores/<store_id>")
    def delete_store(store_id):
        return locked(vector_stores.delete_store, store_id)

    @app.post("/v1/vector_stores/<store_id>/files")
    def create_store_file(store_id):
        return locked(vector_stores.create_store_file, store_id, read_body())

    @app.get("/v1/vector_stores/<store_id>/files")
    def list_store_files(store_id):
        return locked(vector_stores.list_store_files, store_id, request.args)

    @app.get("/v1/vector_stores/<store_id>/files/<file_id>")
    def get_store_file(store_id, file_id):
        return locked(vector_stores.get_store_file, store_id, file_id)

    @app.delete("/v1/vector_stores/<store_id>/files/<file_id>")
    def delete_store_file(store_id, file_id):
        return locked(vector_stores.delete_store_file, store_id, file_id)

    @app.post("/v1/vector_stores/<store_id>/search")
    def search_store(store_id):
        return locked(vector_stores.search_store, store_id, read_body())

    @app.get("/v1/threads/<thread_id>/runs/<run_id>/steps")
    def list_steps(thread_id, run_id):
        return locked(run_steps.list_steps, thread_id, run_id, request.args)

    @app.get("/v1/threads/<thread_id>/runs/<run_id>/steps/<step_id>")
    def get_step(thread_id, run_id, step_id):
        return locked(run_steps.get_step, thread_id, run_id, step_id, request.args)

    @app.post("/_fake/assistants/<assistant_id>")
    def fake_set_assistant(assistant_id):
        return locked(knowledge.set_assistant, assistant_id, read_body())

    @app.get("/_fake/assistants/<assistant_id>")
    def fake_get_assistant(assistant_id):
        return locked(knowledge.get_assistant, assistant_id)
