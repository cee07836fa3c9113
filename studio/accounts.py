"""Accounts for a shared studio: who may sign in, who is an admin, and how fast wrong passwords
may be tried.

An account is written ``user:password`` (``user:password:admin`` for an admin, who sees every
run in the gallery). Accounts come from ``--auth`` (repeatable, each a comma-separated list)
and from ``--auth-file`` (one account a line; blank lines and ``#`` comments are skipped).
"""
from __future__ import annotations

import hmac
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ADMIN_FLAG = "admin"


@dataclass(frozen=True)
class Account:
    user: str
    password: str
    admin: bool = False


def parse_account(text: str, where: str = "--auth") -> Account:
    """One ``user:password[:admin]``; ValueError saying what is wrong."""
    user, sep, rest = text.strip().partition(":")
    admin = False
    if rest.endswith(":" + ADMIN_FLAG):
        rest, admin = rest[: -len(ADMIN_FLAG) - 1], True
    if not sep or not user.strip() or not rest:
        raise ValueError(f"{where} expects user:password (both non-empty, add :admin for an admin), "
                         f"got {_masked(text)!r}.")
    return Account(user.strip(), rest, admin)


def _masked(text: str) -> str:
    user, sep, _ = text.strip().partition(":")
    return f"{user}:***" if sep else user


def parse_auth_values(values: list[str] | None) -> list[Account]:
    """Accounts from --auth values (each may hold several, separated by commas)."""
    accounts = []
    for value in values or []:
        for part in str(value).split(","):
            if part.strip():
                accounts.append(parse_account(part))
    return accounts


def read_auth_file(path: str) -> list[Account]:
    """Accounts from a file of ``user:password[:admin]`` lines; ValueError naming a bad line."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise ValueError(f"--auth-file {Path(path).name}: cannot read it ({err.strerror or err}).") from None
    accounts = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        accounts.append(parse_account(line, where=f"--auth-file {Path(path).name} line {number}"))
    if not accounts:
        raise ValueError(f"--auth-file {Path(path).name} lists no account (one user:password a line).")
    return accounts


def check_unique(accounts: list[Account]) -> list[Account]:
    seen = set()
    for account in accounts:
        if account.user in seen:
            raise ValueError(f"The account {account.user!r} is given twice: give each user once.")
        seen.add(account.user)
    return accounts


class Accounts:
    """The accounts the studio accepts; `verify(user, password)` is Gradio's auth function."""

    def __init__(self, accounts: list[Account]):
        self._by_user = {a.user: a for a in check_unique(list(accounts))}

    def __bool__(self) -> bool:
        return bool(self._by_user)

    def __len__(self) -> int:
        return len(self._by_user)

    @property
    def users(self) -> list[str]:
        return list(self._by_user)

    def verify(self, user: str, password: str) -> bool:
        account = self._by_user.get(str(user or "").strip())
        # Compared in constant time, and a comparison is made for an unknown user too.
        expected = account.password if account else "\0" * max(len(password or ""), 1)
        ok = hmac.compare_digest(str(password or "").encode(), expected.encode())
        return ok and account is not None

    def is_admin(self, user: str | None) -> bool:
        account = self._by_user.get(user or "")
        return bool(account and account.admin)

    def gallery_owner(self, user: str | None) -> str | None:
        """Whose runs `user` sees: None (every run) without accounts or for an admin, else their own.
        A request with no signed-in user while accounts exist sees an account no one has."""
        if not self._by_user or self.is_admin(user):
            return None
        return user if user else "\0nobody"


class LoginThrottle:
    """Slows down password guessing: after `max_failures` wrong passwords for one account, or
    `max_address_failures` from one client address, within `window_s`, sign-ins for that account
    (or from that address) are refused for `lock_s` seconds, even with the right password."""

    def __init__(self, max_failures: int = 5, max_address_failures: int = 20, window_s: float = 600.0,
                 lock_s: float = 60.0, clock=time.monotonic):
        self.max_failures, self.max_address_failures = max_failures, max_address_failures
        self.window_s, self.lock_s, self.clock = window_s, lock_s, clock
        self._failures: dict[tuple[str, str], list[float]] = {}
        self._locked_until: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def rule(self) -> str:
        """The throttle in one sentence, for the sign-in page."""
        return (f"After {self.max_failures} wrong passwords an account waits {int(self.lock_s)} s before it can "
                "sign in again.")

    def _keys(self, user: str, address: str) -> list[tuple[tuple[str, str], int]]:
        return [(("user", user.strip()), self.max_failures), (("address", address), self.max_address_failures)]

    def refused(self, user: str, address: str) -> str | None:
        """None when a sign-in may be tried now, else the message saying why not and how long to wait."""
        now = self.clock()
        with self._lock:
            for key, _limit in self._keys(user, address):
                until = self._locked_until.get(key, 0.0)
                if until > now:
                    wait = int(until - now) + 1
                    who = "for this account" if key[0] == "user" else "from this address"
                    return (f"Too many failed sign-ins {who}: wait {wait} s, then try again "
                            "(ask the studio's owner if you forgot the password).")
        return None

    def failed(self, user: str, address: str) -> None:
        now = self.clock()
        with self._lock:
            for key, limit in self._keys(user, address):
                recent = [t for t in self._failures.get(key, []) if now - t < self.window_s] + [now]
                if len(recent) >= limit:
                    self._locked_until[key] = now + self.lock_s
                    recent = []
                self._failures[key] = recent
            if len(self._failures) > 10_000:         # a flood of made-up names must not grow memory
                self._failures = {k: v for k, v in self._failures.items() if v and now - v[-1] < self.window_s}

    def succeeded(self, user: str) -> None:
        with self._lock:
            self._failures.pop(("user", user.strip()), None)
