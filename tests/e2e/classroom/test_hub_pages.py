"""The hub's user list comes in pages; Hub.users reads them all from the real hub."""

from __future__ import annotations

from tests.e2e.classroom.conftest import Classroom

# Hub users only (no roster entry, no server): enough for three pages of two.
NAMES = [f"pages-{i}" for i in range(5)]


def test_every_hub_user_is_read_past_the_first_page(classroom: Classroom) -> None:
    admin = classroom.admin()
    admin.api("POST", "/users", {"usernames": NAMES}, ok=(409,))
    try:
        # One GET answers one page (50 by default): what the tools once took for every user.
        assert len(admin.api("GET", "/users?limit=2")) == 2
        paged = [u["name"] for u in admin.users(page_size=2)]
        assert len(paged) == len(set(paged)), paged
        assert {*NAMES, "instructor"} <= set(paged)
        assert set(paged) == {u["name"] for u in admin.users()}
    finally:
        for name in NAMES:
            admin.api("DELETE", f"/users/{name}", ok=(404,))
    assert not set(NAMES) & {u["name"] for u in admin.users()}
