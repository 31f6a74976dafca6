"""Browser pages in the e2e tests: a failure names a screenshot of the page it happened on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Page


@contextmanager
def screenshot_on_failure(page: Page, tmp_path: Path, name: str) -> Iterator[None]:
    """Any failure inside becomes an AssertionError naming a screenshot of the page."""
    try:
        yield
    except Exception as exc:
        shot = tmp_path / f"{name}.png"
        try:
            page.screenshot(path=str(shot), full_page=True)
            where = f"screenshot: {shot}"
        except Exception as shot_error:  # a dead page still has a failure worth reporting
            where = f"no screenshot ({shot_error})"
        raise AssertionError(f"{exc}\n{where} (at {page.url})") from exc
