"""Batch rendering: a job file of requests -> PNGs and a manifest, in this process or on a Ray actor pool."""

from .job import Item, Job, RowError, read_job
from .run import RenderProgress, RenderReport, render

__all__ = ["Item", "Job", "RenderProgress", "RenderReport", "RowError", "read_job", "render"]
