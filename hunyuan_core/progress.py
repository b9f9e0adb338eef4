"""Progress bars for scripts and the CLI: tqdm (elapsed, rate, ETA) driven by the core's progress callbacks.

The core reports progress as ``progress(step, total, ...)``; :class:`TqdmProgress` is such a callable, so the
pipeline, the upscaler and the CLI share one bar, and a host (ComfyUI) passes its own callable instead.
Loading big weights draws one too (:func:`loading_bar`). Every bar goes to stderr; ``TQDM_DISABLE=1`` hides all.
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


LOADING_BAR_MIN_BYTES = 256 * 2**20  # smaller weights load in about a second: no bar
_loading_bar_config: dict = {}


def set_loading_bar_config(**config: object) -> None:
    """Options of the bars drawn while big weights load (tqdm's: ``disable=True`` hides them, ``leave``, ...);
    the loaders' counterpart of ``pipe.set_progress_bar_config``, for every load after this call."""
    _loading_bar_config.clear()
    _loading_bar_config.update(config)


def loading_bar(total_bytes: int, what: str) -> TqdmProgress:
    """A bar for materialising ``total_bytes`` of ``what``'s weights, report ``bar(bytes_done, total_bytes)``;
    it stays hidden below :data:`LOADING_BAR_MIN_BYTES`."""
    config = {"desc": f"loading {what}", "unit": "B", "unit_scale": True, "unit_divisor": 1024, **_loading_bar_config}
    config["disable"] = bool(config.get("disable")) or total_bytes < LOADING_BAR_MIN_BYTES
    return TqdmProgress(**config)
