"""Serve the fake upstream: python -m fake_openai --host 127.0.0.1 --port 9000."""

import argparse
import logging

from werkzeug.serving import make_server

from . import create_fake_app


def main(argv=None):
    """Parse the command line and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m fake_openai", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--default-duration", type=float, default=0.3)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--label", default=None)
    parser.add_argument("--log-requests", action="store_true", help="log every request (off: it slows benchmarks)")
    args = parser.parse_args(argv)
    if not args.log_requests:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
    app = create_fake_app(api_key=args.api_key, default_duration=args.default_duration, label=args.label)
    server = make_server(args.host, args.port, app, threaded=True)
    print(f"fake OpenAI upstream listening on http://{args.host}:{server.server_port}/v1", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
