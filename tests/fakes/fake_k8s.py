"""A fake Kubernetes core/v1 pod API for the real KubernetesPodOperator and kubernetes client.

No API server, kind or k3s can run on the test machines (no container runtime), so this
``ThreadingHTTPServer`` implements what KPO calls: create/list/get/patch/delete pods (label
selectors ``a=b``, ``a!=b``, ``!a``, ``a``), ``/log``, ``/events``, and ``/exec`` over a real
websocket with the ``v4.channel.k8s.io`` framing, which is how KPO reads ``/airflow/xcom/return.json``
from the ``airflow-xcom-sidecar`` container and then stops the sidecar.

A created pod "runs" at once: :attr:`FakeK8s.behaviour` maps the pod spec to an :class:`Outcome`
(exit code, log lines, the XCom file's content). The base container ends terminated with that exit
code; a pod with the XCom sidecar stays ``Running`` until the sidecar is stopped through ``exec``,
then becomes ``Succeeded`` or ``Failed``, as on a cluster. With ``FallbackToLogsOnError`` a failed
container's termination message is the tail of its log. Every request is recorded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import yaml

SIDECAR = "airflow-xcom-sidecar"
EMPTY_XCOM = "__airflow_xcom_result_empty__"
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
STDOUT, ERROR = 1, 3
POD_RE = re.compile(r"^/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?(?:/(log|exec))?$")
EVENTS_RE = re.compile(r"^/api/v1/namespaces/([^/]+)/events$")


@dataclass
class Outcome:
    exit_code: int = 0
    log_lines: list[str] = field(default_factory=lambda: ["fake pod: done"])
    xcom: str | None = None  # content of /airflow/xcom/return.json, None when the file is empty


def _match(labels: dict, selector: str) -> bool:
    for term in filter(None, (selector or "").split(",")):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k) != v.lstrip("="):
                return False
        elif term not in labels:
            return False
    return True


def _now() -> str:
    # Must be current: KPO stops streaming logs of containers terminated long ago.
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _terminated(code: int, ts: str, message: str | None = None) -> dict:
    state = {"exitCode": code, "reason": "Completed" if code == 0 else "Error", "startedAt": ts, "finishedAt": ts}
    if message:
        state["message"] = message
    return {"terminated": state}


class FakeK8s:
    """Start with ``with FakeK8s() as fake:``; point a kubeconfig at it with :meth:`write_kubeconfig`."""

    def __init__(self, behaviour: Callable[[dict], Outcome] | None = None):
        self.pods: dict[tuple[str, str], dict] = {}
        self.outcomes: dict[tuple[str, str], Outcome] = {}
        self.requests: list[tuple[str, str]] = []
        self.execs: list[tuple[str, str, list[str]]] = []  # (pod, container, command)
        self.created: list[dict] = []  # every pod as posted, kept after deletion
        self.behaviour = behaviour or (lambda pod: Outcome())
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeK8s:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def write_kubeconfig(self, path: Path, namespace: str = "default") -> str:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": "fake-token"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": namespace}}]}))
        return str(path)

    # --- pod lifecycle -------------------------------------------------------------------------
    def create(self, ns: str, pod: dict) -> dict:
        ts = _now()
        md = pod["metadata"]
        md.update(uid=str(uuid.uuid4()), creationTimestamp=ts, namespace=ns)
        outcome = self.behaviour(pod)
        statuses = []
        for c in pod["spec"]["containers"]:
            if c["name"] == SIDECAR:
                statuses.append({"name": SIDECAR, "ready": True, "restartCount": 0, "image": c.get("image", ""),
                                 "imageID": "fake", "state": {"running": {"startedAt": ts}}})
                continue
            message = None
            if outcome.exit_code and c.get("terminationMessagePolicy") == "FallbackToLogsOnError":
                message = "\n".join(outcome.log_lines[-80:])[-2048:]
            statuses.append({"name": c["name"], "ready": False, "restartCount": 0, "image": c.get("image", ""),
                             "imageID": "fake", "state": _terminated(outcome.exit_code, ts, message)})
        has_sidecar = any(s["name"] == SIDECAR for s in statuses)
        phase = "Running" if has_sidecar else ("Succeeded" if outcome.exit_code == 0 else "Failed")
        pod["status"] = {"phase": phase, "startTime": ts, "containerStatuses": statuses,
                         "conditions": [{"type": "PodScheduled", "status": "True"}]}
        with self.lock:
            self.pods[(ns, md["name"])] = pod
            self.outcomes[(ns, md["name"])] = outcome
            self.created.append(pod)
        return pod

    def stop_sidecar(self, ns: str, name: str) -> None:
        with self.lock:
            pod = self.pods[(ns, name)]
            ts = _now()
            for status in pod["status"]["containerStatuses"]:
                if status["name"] == SIDECAR:
                    status["state"] = _terminated(0, ts)
            pod["status"]["phase"] = "Succeeded" if self.outcomes[(ns, name)].exit_code == 0 else "Failed"


def _handler(fake: FakeK8s) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def _send(self, code: int, body, ctype: str = "application/json") -> None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _body(self) -> dict:
            return json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")

        def _route(self, method: str) -> None:
            url = urlparse(self.path)
            query = parse_qs(url.query)
            fake.requests.append((method, url.path))
            if EVENTS_RE.match(url.path):
                return self._send(200, {"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": []})
            m = POD_RE.match(url.path)
            if not m:
                return self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound"})
            ns, name, sub = m.groups()
            if name is None and method == "GET":
                selector = query.get("labelSelector", [""])[0]
                items = [p for (pns, _), p in list(fake.pods.items())
                         if pns == ns and _match(p["metadata"].get("labels", {}), selector)]
                return self._send(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
            if name is None and method == "POST":
                return self._send(201, fake.create(ns, self._body()))
            if (ns, name) not in fake.pods:
                return self._send(404, {"kind": "Status", "code": 404, "reason": "NotFound",
                                        "message": f'pods "{name}" not found'})
            pod = fake.pods[(ns, name)]
            if sub == "log":
                ts = pod["status"]["startTime"]
                lines = fake.outcomes[(ns, name)].log_lines
                return self._send(200, "".join(f"{ts} {line}\n" for line in lines).encode(), "text/plain")
            if sub == "exec":
                return self._exec(ns, name, query.get("container", [""])[0], query.get("command", []))
            if method == "GET":
                return self._send(200, pod)
            if method == "PATCH":
                labels = self._body().get("metadata", {}).get("labels", {})
                pod["metadata"].setdefault("labels", {}).update(labels)
                return self._send(200, pod)
            if method == "DELETE":
                del fake.pods[(ns, name)]
                return self._send(200, pod)
            return self._send(405, {"kind": "Status", "code": 405})

        # --- exec over a websocket (v4.channel.k8s.io: first payload byte is the channel) ------
        def _exec(self, ns: str, name: str, container: str, command: list[str]) -> None:
            if self.headers.get("Upgrade", "").lower() != "websocket":
                return self._send(400, {"kind": "Status", "code": 400, "message": "exec needs a websocket upgrade"})
            fake.execs.append((name, container, command))
            accept = base64.b64encode(hashlib.sha1((self.headers["Sec-WebSocket-Key"] + WS_GUID).encode()).digest())
            self.send_response(101, "Switching Protocols")
            self.send_header("Upgrade", "websocket")
            self.send_header("Connection", "Upgrade")
            self.send_header("Sec-WebSocket-Accept", accept.decode())
            self.send_header("Sec-WebSocket-Protocol", "v4.channel.k8s.io")
            self.end_headers()
            self.close_connection = True
            if container != SIDECAR:
                self._frame(ERROR, json.dumps({"status": "Failure", "message": "fake: exec only in the sidecar"}))
            elif command[:2] == ["/bin/sh", "-c"] and "return.json" in command[2]:
                self._frame(STDOUT, fake.outcomes[(ns, name)].xcom or EMPTY_XCOM)
                self._frame(ERROR, json.dumps({"metadata": {}, "status": "Success"}))
            elif command == ["/bin/sh"]:
                self._read_client_frame()  # the kill command written to stdin
                fake.stop_sidecar(ns, name)
            self.wfile.write(b"\x88\x02" + struct.pack("!H", 1000))
            self.wfile.flush()

        def _frame(self, channel: int, text: str) -> None:
            payload = bytes([channel]) + text.encode()
            n = len(payload)
            header = bytes([0x82]) + (bytes([n]) if n < 126 else
                                      bytes([126]) + struct.pack("!H", n) if n < 65536 else
                                      bytes([127]) + struct.pack("!Q", n))
            self.wfile.write(header + payload)
            self.wfile.flush()

        def _read_client_frame(self) -> bytes:
            try:
                head = self.rfile.read(2)
                n = head[1] & 0x7F
                if n == 126:
                    n = struct.unpack("!H", self.rfile.read(2))[0]
                elif n == 127:
                    n = struct.unpack("!Q", self.rfile.read(8))[0]
                mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
                data = self.rfile.read(n)
                return bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            except (OSError, IndexError):
                return b""

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_PATCH(self) -> None:
            self._route("PATCH")

        def do_DELETE(self) -> None:
            self._route("DELETE")

    return Handler
