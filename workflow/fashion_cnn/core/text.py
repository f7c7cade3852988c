"""Words shown to people beside figures: durations, and the mark of a run trained without the
ImageNet weights it asked for. Torch-free, so the tables over results may use them."""

from __future__ import annotations

FALLBACK_SOURCE = "random init (ImageNet weights unavailable)"


def fallback_mark(chapter_accuracy: float | None) -> str:
    """The marker shown beside an accuracy trained without the ImageNet weights it asked for."""
    number = f"{100 * chapter_accuracy:g}%" if chapter_accuracy is not None else "number"
    return f"random init — not comparable with the chapter's {number}"


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {seconds:02d} s"
    return f"{seconds} s"
