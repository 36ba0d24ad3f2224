"""What the tests' small OpenAI-compatible HTTP servers (``http.server``) share."""

from __future__ import annotations

import json
from typing import Any


def send_json(handler: Any, obj: Any, status: int = 200) -> None:
    """Answer the request ``handler`` is serving with ``obj`` as JSON."""
    data = json.dumps(obj).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
