"""Which callback URLs a job may name, and one delivery attempt to a real HTTP receiver on
loopback: signed as docs/webhooks.md says, no redirect followed, cut off at the timeout."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from pydantic import ValidationError

from bienc.config.errors import InvalidInputError
from bienc.config.settings import Settings
from bienc.queue.webhooks import WebhookError, check_callback_url, deliver, sign
from tests.webhook_receiver import SECRET, closed_port, documented_verify, receiver


def _settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"webhook_allowed_hosts": "127.0.0.1, hooks.example.com:8443, [::1]",
                              "webhook_secret": SECRET, "webhook_timeout_s": 5.0, **overrides}
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def _refusal(settings: Settings, url: str, field: str = "callback_url") -> str:
    with pytest.raises(InvalidInputError) as refused:
        check_callback_url(settings, url, field)
    message = str(refused.value)
    assert message.startswith(f"field '{field}': "), message
    return message


def test_webhooks_are_off_until_hosts_and_a_secret_are_set() -> None:
    off = _refusal(Settings(_env_file=None), "http://127.0.0.1/hook")  # type: ignore[call-arg]
    assert "disabled" in off and "BIENC_WEBHOOK_ALLOWED_HOSTS" in off
    no_secret = _refusal(_settings(webhook_secret=None), "http://127.0.0.1/hook", "--callback-url")
    assert "BIENC_WEBHOOK_SECRET" in no_secret


@pytest.mark.parametrize(("url", "reason"), [
    ("http://example.com/hook", "host 'example.com' (port 80) is not in BIENC_WEBHOOK_ALLOWED_HOSTS"),
    ("http://127.0.0.1.example.com/", "is not in BIENC_WEBHOOK_ALLOWED_HOSTS"),
    ("http://127.0.0.2/", "is not in BIENC_WEBHOOK_ALLOWED_HOSTS"),
    ("https://hooks.example.com/", "(port 443) is not in"),  # only :8443 is allowed there
    ("http://[::2]:80/", "host '::2'"),
    ("ftp://127.0.0.1/hook", "must be an http:// or https:// URL"),
    ("file:///etc/passwd", "must be an http:// or https:// URL"),
    ("gopher://127.0.0.1:6379/_FLUSHALL", "must be an http:// or https:// URL"),
    ("http://user:pass@127.0.0.1/", "must not hold credentials"),
    ("http://example.com@127.0.0.1/", "must not hold credentials"),
    ("http:///nohost", "names no host"),
    ("http://127.0.0.1:99999/", "invalid port"),
    ("http://127.0.0.1/a b", "spaces or control characters"),
    ("http://127.0.0.1/" + "a" * 3000, "longer than 2048"),
])
def test_a_callback_that_cannot_be_called_is_refused_saying_why(url: str, reason: str) -> None:
    assert reason in _refusal(_settings(), url)


@pytest.mark.parametrize("url", [
    "http://127.0.0.1/hook", "http://127.0.0.1:8080/hook?job=1", "HTTP://127.0.0.1",
    "https://HOOKS.example.com:8443/bienc", "http://[::1]:9000/",
])
def test_a_callback_on_an_allowed_host_is_accepted(url: str) -> None:
    assert check_callback_url(_settings(), url) == url


@pytest.mark.parametrize("hosts", ["http://hooks.example.com", "*.example.com",
                                   "hooks.example.com/path", "host:port"])
def test_an_allow_list_entry_is_a_host_and_nothing_else(hosts: str) -> None:
    with pytest.raises(ValidationError, match="is not a host, host:port"):
        _settings(webhook_allowed_hosts=hosts)


def test_the_secret_is_long_enough_and_the_waits_fit_the_visibility_timeout() -> None:
    with pytest.raises(ValidationError, match="a webhook secret needs at least 16 characters"):
        _settings(webhook_secret="short")
    with pytest.raises(ValidationError, match="BIENC_WEBHOOK_BACKOFF_MAX_S"):
        _settings(visibility_timeout_s=100, webhook_backoff_max_s=96.0)  # + the 5 s timeout
    off = Settings(_env_file=None, visibility_timeout_s=5, retry_backoff_max_s=1)  # type: ignore[call-arg]
    assert off.webhook_host_list == []  # webhooks off: no relation to keep


def test_a_delivery_is_signed_as_the_documentation_says() -> None:
    verify = documented_verify()
    body = json.dumps({"job_id": "j1", "state": "completed"}).encode()
    with receiver() as hooks:
        assert deliver(_settings(), hooks.url("/hook?x=1"), body, "j1.1") == 200
        [got] = hooks.at("/hook?x=1")
    assert got.body == body
    assert got.headers["Content-Type"] == "application/json"
    assert got.headers["X-Bienc-Delivery"] == "j1.1"
    header = got.headers["X-Bienc-Signature"]
    assert verify(SECRET, header, got.body)
    assert not verify("another-secret-0123456789", header, got.body)
    assert not verify(SECRET, header, got.body.replace(b"completed", b"failed"))
    assert not verify(SECRET, "t=1,v1=00", got.body)
    assert not verify(SECRET, "garbage", got.body)
    replayed = sign(SECRET, got.body, int(time.time()) - 3600)  # a capture sent an hour later
    assert not verify(SECRET, replayed, got.body)


def test_a_redirect_is_a_failure_and_is_not_followed() -> None:
    with receiver() as hooks:
        hooks.answers["/moved"] = [302]
        with pytest.raises(WebhookError, match="answered 302 to '/elsewhere'; redirects are not "
                                               "followed") as failed:
            deliver(_settings(), hooks.url("/moved"), b"{}", "j.1")
        assert not failed.value.permanent
        assert [r.path for r in hooks.received] == ["/moved"]


def test_a_refusal_or_a_closed_port_is_a_failure_to_retry() -> None:
    with receiver() as hooks:
        hooks.answers["/busy"] = [500]
        with pytest.raises(WebhookError, match="answered 500: receiver says no") as refused:
            deliver(_settings(), hooks.url("/busy"), b"{}", "j.1")
        assert not refused.value.permanent
    with pytest.raises(WebhookError, match=r"cannot connect to 127\.0\.0\.1 port \d+: .*refused"):
        deliver(_settings(), f"http://127.0.0.1:{closed_port()}/hook", b"{}", "j.1")


def test_an_attempt_is_cut_off_at_the_timeout() -> None:
    with receiver() as hooks:
        hooks.hold_s = 30.0
        started = time.monotonic()
        with pytest.raises(WebhookError, match=r"no answer within 0\.5 s"):
            deliver(_settings(webhook_timeout_s=0.5), hooks.url("/slow"), b"{}", "j.1")
        assert time.monotonic() - started < 10  # not the receiver's 30 s


def test_a_worker_whose_settings_refuse_the_url_calls_nothing() -> None:
    with receiver() as hooks:
        for settings in (_settings(webhook_allowed_hosts="hooks.example.com"),
                         Settings(_env_file=None)):  # type: ignore[call-arg]
            with pytest.raises(WebhookError) as refused:
                deliver(settings, hooks.url("/hook"), b"{}", "j.1")
            assert refused.value.permanent
        assert hooks.received == []
