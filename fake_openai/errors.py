"""OpenAI-style API errors: an exception carrying the HTTP status and the error body."""


class ApiError(Exception):
    """An error answered as `{"error": {"message", "type", "param", "code"}}`."""

    def __init__(self, status, message, type="invalid_request_error", param=None, code=None, headers=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self):
        """The JSON body OpenAI sends for this error."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message, param=None, code=None):
    """A 400 invalid_request_error."""
    return ApiError(400, message, param=param, code=code)


def not_found(message):
    """A 404 invalid_request_error."""
    return ApiError(404, message)


def missing_param(name):
    """The 400 OpenAI answers when a required body parameter is absent."""
    return bad_request(f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")


def invalid_value(name, value, supported):
    """The 400 OpenAI answers for an enum parameter with an unsupported value."""
    quoted = [f"'{s}'" for s in supported]
    choices = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]
    return bad_request(f"Invalid value: '{value}'. Supported values are: {choices}.", param=name, code="invalid_value")


def invalid_type(name, expected, value):
    """The 400 OpenAI answers when a parameter has the wrong JSON type."""
    return bad_request(
        f"Invalid type for '{name}': expected {expected}, but got {_json_type(value)} instead.",
        param=name,
        code="invalid_type",
    )


def _json_type(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def check_known_params(body, allowed):
    """Reject body keys OpenAI would not recognise, as OpenAI does."""
    for key in body:
        if key not in allowed:
            raise bad_request(f"Unrecognized request argument supplied: {key}")


def transient(kind, retry_after="0"):
    """A canned transient upstream failure of the given kind ("500", "503" or "429")."""
    kind = str(kind)
    if kind == "429":
        return ApiError(
            429,
            "Rate limit reached for requests. Please try again in 0s. "
            "Visit https://platform.openai.com/account/rate-limits to learn more.",
            type="requests",
            code="rate_limit_exceeded",
            headers={"retry-after": str(retry_after)},
        )
    if kind == "503":
        return ApiError(503, "The server is overloaded or not ready yet.", type="server_error")
    return ApiError(
        500,
        "The server had an error while processing your request. Sorry about that!",
        type="server_error",
    )
