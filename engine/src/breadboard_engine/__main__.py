"""Command line: `python -m breadboard_engine serve|version|schema`.

Kept import-light: `version --json` runs on every `breadboard engine install` to validate a venv, so it must not import
FastAPI or Ray.
"""

from __future__ import annotations

import argparse
import json
import sys

from .version import identity_document


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="breadboard-engine", description="BreadBoard agent engine")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", help="bind address (env BREADBOARD_CLI_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (env BREADBOARD_CLI_PORT, default 9099; 0 picks a free one)")
    serve.add_argument("--fd", type=int, help="serve on this already-bound listening socket (from a supervisor)")
    serve.add_argument("--data-dir", help="sessions and Ray temp dir (env BREADBOARD_DATA_DIR)")
    serve.add_argument("--ray-address", help="join this existing Ray cluster (env BREADBOARD_RAY_ADDRESS)")
    serve.add_argument(
        "--ray",
        choices=["background", "lazy", "off"],
        help="when a local Ray starts: once the port is open, at the first turn, or never (env BREADBOARD_RAY_START)",
    )
    serve.add_argument(
        "--ssl-certfile", help="serve HTTPS with this PEM certificate (chain) (env BREADBOARD_SSL_CERTFILE)"
    )
    serve.add_argument(
        "--ssl-keyfile", help="the certificate's unencrypted PEM private key, mode 0600 (env BREADBOARD_SSL_KEYFILE)"
    )
    serve.add_argument("--log-level", help="uvicorn/engine log level (env BREADBOARD_CLI_LOG_LEVEL, default info)")

    version = sub.add_parser("version", help="print the engine and protocol versions")
    version.add_argument("--json", action="store_true", help="machine-readable output")

    sub.add_parser("schema", help="print the JSON Schema of the protocol (docs/protocol.schema.json)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "version":
        doc = identity_document()
        if args.json:
            print(json.dumps(doc))
        else:
            print(f"breadboard-engine {doc['engine_version']} (protocol {doc['protocol_version']})")
        return 0

    if args.command == "schema":
        from .protocol import schema_text

        sys.stdout.write(schema_text())
        return 0

    from .server import serve  # heavy imports only when serving

    return serve(args)


if __name__ == "__main__":
    sys.exit(main())
