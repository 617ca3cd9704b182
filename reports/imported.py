"""How reports label results brought in by `gfvc import` (docs/importing.md).

An imported codec's provenance in run.json carries an ``imported`` block:
the provenance its importer states, where the files came from and which files
its rate counts. Its numbers enter every table like a native codec's; this
module gives the one sentence every report shows for it, so nobody reads an
imported row as something the suite ran.
"""
from __future__ import annotations

from typing import Any

STATED_LABELS = (("software", "software"), ("commit", "commit"), ("checkpoint_sha256", "checkpoint sha256"),
                 ("contact", "contact"))


def is_imported(prov: Any) -> bool:
    return isinstance(prov, dict) and isinstance(prov.get("imported"), dict)


def imported_codecs(run: dict[str, Any]) -> list[str]:
    """Codecs of a run.json whose results were imported."""
    return [c for c, p in (run.get("codecs") or {}).items() if is_imported(p)]


def imported_note(codec: str, prov: Any) -> str | None:
    """The report's sentence for an imported codec (None for a codec the suite ran)."""
    if not is_imported(prov):
        return None
    block = prov["imported"]
    stated = block.get("stated") if isinstance(block.get("stated"), dict) else {}
    parts = [str(stated.get("description") or "none stated")]
    parts += [f"{label} {stated[k]}" for k, label in STATED_LABELS if stated.get(k)]
    source = {"ahg": "the GFVC AhG software's output folders", "manifest": "an import manifest"}.get(
        str(block.get("source")), str(block.get("source") or "?"))
    return (f"{codec}: imported results (provenance as stated: {'; '.join(parts)}); the suite did not run this "
            f"codec: it scored the decoded videos supplied through {source} with this condition's metrics and "
            f"counted the rate from {block.get('rate_rule') or 'the supplied bitstream files'}.")
