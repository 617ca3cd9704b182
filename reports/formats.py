"""The formats `gfvc report` writes (one list for the CLI and the document writer)."""
from __future__ import annotations

ALL_FORMATS: tuple[str, ...] = ("md", "html", "docx", "csv", "xlsx", "tex", "json", "txt", "png", "svg", "viewer")
