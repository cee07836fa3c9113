"""The studio's front door, as ASGI middleware in front of Gradio's app.

- Without accounts, only requests addressed to a Host name the studio listens on are served:
  a web page elsewhere cannot point its own name at 127.0.0.1 (DNS rebinding) and drive the
  studio from a visitor's browser. IP addresses, localhost, the host given with --host, this
  machine's name, the Space's host (SPACE_HOST) and names in HUMO_ALLOWED_HOSTS pass.
- With accounts, wrong passwords are throttled per account and per client address
  (`studio.accounts.LoginThrottle`), with a message that says how long to wait; and the outputs
  folder is not served by its own paths: Gradio hands each page copies of the files it may see
  (under names made from their contents), so one account cannot fetch another's videos by
  guessing where they are kept.
- Every response says `X-Content-Type-Options: nosniff`, so an uploaded file is never run as
  a page or a script because its bytes look like one.
"""
from __future__ import annotations

import ipaddress
import json
import os
import socket
from pathlib import Path

from studio.accounts import LoginThrottle

LOGIN_PATHS = ("/login", "/login/")
FILE_ROUTES = ("/gradio_api/file=", "/file=")
SHARE_SUFFIX = ".gradio.live"


def host_names(bind_host: str, share: bool = False) -> "HostPolicy":
    """The Host names a studio listening on `bind_host` answers to."""
    names = {"localhost"}
    if bind_host and not _is_ip(bind_host):
        names.add(bind_host)
    try:
        machine = socket.gethostname()
    except OSError:
        machine = ""
    if machine:
        names.update({machine, machine + ".local"})
    for var in ("SPACE_HOST", "HUMO_ALLOWED_HOSTS"):
        names.update(n.strip() for n in os.environ.get(var, "").split(",") if n.strip())
    return HostPolicy({n.lower().rstrip(".") for n in names}, share)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
        return True
    except ValueError:
        return False


class HostPolicy:
    def __init__(self, names: set[str], share: bool = False):
        self.names, self.share = names, share

    def allows(self, host_header: str | None) -> bool:
        if not host_header:
            return True                       # HTTP/1.0 clients; a browser always sends Host
        host = host_header.strip().lower()
        if host.startswith("["):              # [::1]:7860
            host = host[1:host.find("]")] if "]" in host else host
        elif host.count(":") == 1:
            host = host.split(":", 1)[0]
        host = host.rstrip(".")
        if _is_ip(host) or host in self.names:
            return True
        return self.share and host.endswith(SHARE_SUFFIX)


class StudioGuard:
    """ASGI middleware: Host check (no accounts), sign-in throttle and a private outputs folder
    (accounts), nosniff."""

    def __init__(self, app, hosts: HostPolicy | None = None, throttle: LoginThrottle | None = None,
                 private_dir: str | None = None):
        self.app, self.hosts, self.throttle = app, hosts, throttle
        self.private_dir = Path(private_dir).resolve() if private_dir else None

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}
        if self.hosts is not None and not self.hosts.allows(headers.get("host")):
            if scope["type"] == "websocket":
                return await send({"type": "websocket.close", "code": 1008})
            return await _reply(send, 421, "This studio does not answer to that host name. Open it at the "
                                           "address it was started on (e.g. http://127.0.0.1:7860/).")
        if scope["type"] == "http" and self.throttle is not None and scope.get("method") == "POST" \
                and scope.get("path") in LOGIN_PATHS:
            return await self._login(scope, receive, _nosniff(send))
        if scope["type"] == "http" and self._private(scope.get("path") or ""):
            return await _reply(send, 404, "File not found.")
        return await self.app(scope, receive, _nosniff(send) if scope["type"] == "http" else send)

    def _private(self, path: str) -> bool:
        """True for a request of a file inside the private folder by its own path."""
        if self.private_dir is None:
            return False
        route = next((r for r in FILE_ROUTES if path.startswith(r)), None)
        if route is None:
            return False
        try:
            target = Path(path[len(route):]).resolve()
        except (OSError, ValueError):
            return True
        return target == self.private_dir or self.private_dir in target.parents

    async def _login(self, scope, receive, send):
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        user = await _form_user(scope, body)
        address = (scope.get("client") or ("?", 0))[0]
        why = self.throttle.refused(user, address)
        if why:
            return await _reply(send, 429, why)
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        status = {}

        async def watch(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        await self.app(scope, replay, watch)
        if status.get("code") == 200:
            self.throttle.succeeded(user)
        elif status.get("code") in (400, 401, 403):
            self.throttle.failed(user, address)


async def _form_user(scope, body: bytes) -> str:
    """The username of a sign-in form (urlencoded or multipart)."""
    from starlette.requests import Request

    async def once():
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(scope, once).form()
        return str(form.get("username") or "").strip()
    except Exception:                      # an unreadable form: Gradio answers it; count it as no name
        return ""


def _nosniff(send):
    async def wrapped(message):
        if message["type"] == "http.response.start":
            headers = list(message.get("headers") or [])
            if not any(k.lower() == b"x-content-type-options" for k, _ in headers):
                headers.append((b"x-content-type-options", b"nosniff"))
            message = dict(message, headers=headers)
        await send(message)
    return wrapped


async def _reply(send, status: int, detail: str):
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"x-content-type-options", b"nosniff")]})
    await send({"type": "http.response.body", "body": body})
