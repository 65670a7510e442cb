"""The checkpoint contract shared by the trainer, which writes checkpoints, and the export, which reads them.

A run's checkpoints live in ``<data_root>/runs/<run>/checkpoints/step-<n>/``. A checkpoint is
complete once the trainer has written ``MARKER`` into it (after every rank saved, with the data
position, RNG states, config and metrics); the ``LATEST`` pointer, written last and atomically,
names the newest complete one. ``WEIGHTS`` holds the full fp32 weights as safetensors, so the
export never unpickles anything (docs/reliability.md, cases 20, 21, 32).
"""

from __future__ import annotations

from pathlib import Path

from prixlm_model.config import Settings

MARKER = "prixlm.json"  # written into a checkpoint once every rank has saved: the checkpoint is complete
LATEST = "latest"  # the run's pointer to its newest complete checkpoint, replaced atomically
WEIGHTS = "model.safetensors"  # full fp32 weights in each checkpoint, for the export


def run_folder(settings: Settings, run: str) -> Path:
    """``<data_root>/runs/<run>``."""
    return settings.paths.run_dir(run)


def complete_checkpoints(checkpoints: Path) -> list[Path]:
    """The checkpoints that hold a marker, oldest first."""
    found = [tag for tag in checkpoints.glob("step-*") if (tag / MARKER).is_file()]
    return sorted(found, key=lambda tag: int(tag.name.split("-")[1]))


def latest_checkpoint(checkpoints: Path) -> Path | None:
    """The checkpoint the ``latest`` pointer names, or the newest complete one if the pointer is gone."""
    pointer = checkpoints / LATEST
    if pointer.is_file():
        tag = checkpoints / pointer.read_text(encoding="utf-8").strip()
        if (tag / MARKER).is_file():
            return tag
    complete = complete_checkpoints(checkpoints)
    return complete[-1] if complete else None
