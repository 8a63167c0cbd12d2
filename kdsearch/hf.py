"""transformers as kdsearch uses it: imported from here wherever models are made or loaded.

Set on import, so it holds in the driver and in every Ray worker alike, and commands that only
read results never import transformers (with torch, seconds of every call).
"""

from __future__ import annotations

import transformers

transformers.logging.disable_progress_bar()  # "Writing model shards" bars, once per checkpoint
transformers.logging.set_verbosity_error()  # a new classifier head on a pretrained encoder is expected, not news

__all__ = ["transformers"]
