"""Broker processes for multi-process and crash tests: `python -m bot worker` with the test's settings."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from bot.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment that reproduces `settings` in a child process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BRAZE_", "OPENAI_", "REDIS_"))}
    for name, value in settings.model_dump().items():
        if value is None or name in {"redis_data_dir"}:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if name in ("agent_api_tokens", "admin_api_tokens"):
            value = ",".join(f"{agent}:{token}" for token, agent in value.items())
        elif isinstance(value, tuple | list):
            value = ",".join(value)
        env[name.upper()] = str(value)
    env.update(extra)
    env["PYTHONPATH"] = str(ROOT)
    return env


def start_worker(settings: Settings, **extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "bot", "worker", "--env-file", "/nonexistent"],
        env=settings_env(settings, **extra), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


def kill_hard(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
