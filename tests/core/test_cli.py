"""The command line as a newcomer and an operator meet it."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.processes import ROOT

CLEAN_ENV = {
    k: v
    for k, v in os.environ.items()
    if not k.startswith(("BRAZE_", "OPENAI_", "REDIS_", "WEBHOOK_", "LLM_", "AGENT_", "ZENDESK_", "REGAL_"))
}


def run(
    *args: str, stdin: str = "", env: dict[str, str] | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], check=False,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**CLEAN_ENV, **(env or {})},
    )


def test_piped_hello_gets_a_bot_reply_and_exits_0() -> None:
    result = run("simulate", "--env-file", "/nonexistent", stdin="hello\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines and lines[0].startswith("bot> ") and len(lines[0]) > len("bot> ")


def test_piped_conversation_answers_each_line_in_order() -> None:
    result = run("simulate", "--env-file", "/nonexistent", stdin="where is my order?\nagent\nhello?\n")
    assert result.returncode == 0, result.stderr
    replies = [line for line in result.stdout.splitlines() if line.startswith("bot> ")]
    assert len(replies) == 2  # the FAQ answer, then the handoff; the bot stays silent after it
    assert "tracking" in replies[0]
    assert "connecting you" in replies[1]


def test_serve_refuses_to_start_naming_each_missing_setting() -> None:
    result = run("serve", "--env-file", "/nonexistent", timeout=30)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 4
    for name in ("BRAZE_REST_ENDPOINT", "BRAZE_API_KEY", "BRAZE_REPLY_CAMPAIGN_ID", "WEBHOOK_SECRET"):
        assert any(name in line for line in errors)


def test_serve_names_malformed_settings_without_printing_secrets() -> None:
    env = {
        "BRAZE_REST_ENDPOINT": "not-a-url",
        "REDIS_URL": "http://x",
        "BRAZE_API_KEY": "super-secret-key",
        "AGENT_API_TOKENS": "broken",
    }
    result = run("serve", "--env-file", "/nonexistent", env=env, timeout=30)
    assert result.returncode == 2
    for name in ("BRAZE_REST_ENDPOINT", "REDIS_URL", "AGENT_API_TOKENS"):
        assert name in result.stderr
    assert "super-secret-key" not in result.stderr + result.stdout


def test_worker_requires_redis_url() -> None:
    env = {
        "BRAZE_REST_ENDPOINT": "https://rest.iad-01.braze.com",
        "BRAZE_API_KEY": "k",
        "BRAZE_REPLY_CAMPAIGN_ID": "c",
    }
    result = run("worker", "--env-file", "/nonexistent", env=env, timeout=30)
    assert result.returncode == 2 and "REDIS_URL" in result.stderr
