"""Progress bars for scripts and the CLI: tqdm (elapsed, rate, ETA) driven by the core's progress callbacks.

The core reports progress as ``progress(step, total, ...)``; :class:`TqdmProgress` is such a callable, so the
pipeline, the upscaler and the CLI share one bar, and a host (ComfyUI) passes its own callable instead.
"""

from __future__ import annotations

from tqdm.auto import tqdm


class TqdmProgress:
    """``progress(step, total, *_)`` drawn as a tqdm bar; ``config`` goes to ``tqdm`` (``disable=True``,
    ``desc``, ``leave``, ``file``, ...). The bar opens on the first report and closes at ``step == total``."""

    def __init__(self, **config: object):
        self.config = config
        self.bar: tqdm | None = None

    def __call__(self, step: int, total: int, *_: object) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, **self.config)
        self.bar.update(step - self.bar.n)
        if step >= total:
            self.close()

    def close(self) -> None:
        """End the bar (also when a run stopped early), so the next one starts on a fresh line."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
