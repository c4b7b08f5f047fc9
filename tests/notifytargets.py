"""Real notification targets on loopback for tests: an SMTP server (aiosmtpd) and an HTTP endpoint
(http.server) that keep what they receive. Import the fixtures into a test module to use them."""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Mailbox:
    messages: list = field(default_factory=list)  # email.message.EmailMessage, with .envelope_to

    def text(self, msg) -> str:
        body = msg.get_body(preferencelist=("html", "plain"))
        return body.get_content() if body is not None else ""

    def events(self) -> list[str]:
        return [m["X-Releng-Event"] for m in self.messages]


class _Handler:
    def __init__(self, box: Mailbox):
        self.box = box

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.original_content or envelope.content, policy=email.policy.default)
        msg.envelope_to = list(envelope.rcpt_tos)
        self.box.messages.append(msg)
        return "250 OK"


@pytest.fixture
def smtp_server(monkeypatch):
    """A real SMTP server on 127.0.0.1; the Airflow connection ``releng_smtp`` points at it (no TLS, no auth)."""
    from aiosmtpd.controller import Controller

    box = Mailbox()
    port = free_port()
    controller = Controller(_Handler(box), hostname="127.0.0.1", port=port)
    controller.start()
    conn = {"conn_type": "smtp", "host": "127.0.0.1", "port": port,
            "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "airflow@releng.invalid",
                      "timeout": 10, "retry_limit": 1}}
    monkeypatch.setenv("AIRFLOW_CONN_RELENG_SMTP", json.dumps(conn))
    yield box
    controller.stop()


@dataclass
class Endpoint:
    url: str
    received: list = field(default_factory=list)  # (path, json body)
    fail_next: list = field(default_factory=list)  # status codes to answer with first, one per request

    def events(self) -> list[str]:
        return [body.get("event") for _, body in self.received]

    def by_event(self, event: str) -> list[dict]:
        return [body for _, body in self.received if body.get("event") == event]


@pytest.fixture
def webhook():
    """An HTTP endpoint on 127.0.0.1 that keeps every JSON POST; ``fail_next`` makes it answer errors first."""
    lock = threading.Lock()
    endpoint = Endpoint("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with lock:
                status = endpoint.fail_next.pop(0) if endpoint.fail_next else 200
                if status == 200:
                    endpoint.received.append((self.path, json.loads(body)))
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if status == 200 else b"try again")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    endpoint.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield endpoint
    server.shutdown()
    server.server_close()
