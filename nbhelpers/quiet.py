"""Library notes a learner cannot act on, dropped before they are printed.

transformers 5 says, once per class, that its image processors fall back to PIL when torchvision is missing. diffusers
triggers three of these lines whenever its pipelines are imported (they look up CLIP and SigLIP image processors for
safety checkers and IP-adapters that the curriculum never loads), so every Stable Diffusion notebook would open with
them on a machine without torchvision. The filter sits on transformers' logger by name, so it works whether or not
transformers is imported yet, and drops nothing else: real warnings still show.
"""

from __future__ import annotations

import logging

IMPORT_NOTES = "transformers.utils.import_utils"  # the logger transformers writes those notes with


class DropUnactionableNotes(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "requires torchvision (not installed); falling back to" not in record.getMessage()


def install() -> None:
    """Add the filter once (importing nbhelpers does this)."""
    logger = logging.getLogger(IMPORT_NOTES)
    if not any(isinstance(f, DropUnactionableNotes) for f in logger.filters):
        logger.addFilter(DropUnactionableNotes())
