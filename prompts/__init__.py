"""Prompts and fixed texts are data; this loader is the one place that reads and renders them."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from string import Template
from typing import Any

import yaml


@dataclass(frozen=True)
class FaqEntry:
    question: str
    answer: str
    keywords: tuple[str, ...] = ()


@dataclass(frozen=True)
class Prompts:
    system: str
    texts: dict[str, str]
    faq: tuple[FaqEntry, ...]

    def text(self, name: str, **values: Any) -> str:
        """A fixed user-facing text; `$name` placeholders are filled from `values`."""
        return Template(self.texts[name]).substitute(**values).strip()

    def system_prompt(self, **values: Any) -> str:
        return Template(self.system).safe_substitute(**values).strip()


def _read(name: str) -> str:
    return resources.files("prompts").joinpath(name).read_text(encoding="utf-8")


def load_prompts() -> Prompts:
    texts = yaml.safe_load(_read("texts.yaml"))
    faq_raw = yaml.safe_load(_read("faq.yaml"))
    faq = tuple(
        FaqEntry(
            question=str(item["question"]),
            answer=str(item["answer"]).strip(),
            keywords=tuple(str(k) for k in item.get("keywords", [])),
        )
        for item in faq_raw["entries"]
    )
    return Prompts(system=_read("system.md"), texts={str(k): str(v) for k, v in texts.items()}, faq=faq)
