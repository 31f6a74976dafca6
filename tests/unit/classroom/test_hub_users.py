"""Hub.users reads every page of the hub's user list (a fake hub over HTTP, no Docker)."""

from __future__ import annotations

import http.server
import json
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mlflow_lab.classroom import hub as hub_module
from mlflow_lab.classroom.hub import Hub, HubError
from tests.helpers import served

NAMES = [f"student{i:02}" for i in range(7)]


def fake_hub(
    names: list[str],
    max_limit: int,
    asked: list[dict[str, Any]],
    *,
    endless: bool = False,
    old: bool = False,
) -> Callable[..., http.server.BaseHTTPRequestHandler]:
    """GET /hub/api/users as JupyterHub answers it: a page of at most `max_limit` users
    (its api_page_max_limit), in the paginated format only when the request asks for it;
    `asked` records each request's query and Accept header. `old`: a hub before
    JupyterHub 2, every user in one plain list whatever was asked."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = dict(urllib.parse.parse_qsl(url.query))
            asked.append({**query, "accept": self.headers.get("Accept", "")})
            offset = int(query.get("offset", 0))
            limit = min(int(query.get("limit", max_limit)), max_limit)
            items = [{"name": n, "servers": {}} for n in names[offset : offset + limit]]
            following = None
            if endless or offset + limit < len(names):
                following = {"offset": offset + limit, "limit": limit, "url": "unused"}
            page = {
                "items": items,
                "_pagination": {
                    "offset": offset,
                    "limit": limit,
                    "total": len(names),
                    "next": following,
                },
            }
            paginated = self.headers.get("Accept") == "application/jupyterhub-pagination+json"
            answer: Any = page if paginated else items
            if old:
                answer = [{"name": n} for n in names]
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def asked() -> list[dict[str, Any]]:
    return []


@pytest.fixture
def paging_hub(asked: list[dict[str, Any]]) -> Iterator[Hub]:
    with served(fake_hub(NAMES, max_limit=3, asked=asked)) as url:
        yield Hub(url, token="t")


def test_every_user_is_read_past_the_first_page(
    paging_hub: Hub, asked: list[dict[str, Any]]
) -> None:
    assert [u["name"] for u in paging_hub.users()] == NAMES
    # The hub gave 3 of the 200 asked for; the next pages start where its `next` said.
    assert [a["offset"] for a in asked] == ["0", "3", "6"]
    assert {a["accept"] for a in asked} == {"application/jupyterhub-pagination+json"}


def test_a_smaller_page_size_is_asked_for(paging_hub: Hub, asked: list[dict[str, Any]]) -> None:
    assert [u["name"] for u in paging_hub.users(page_size=2)] == NAMES
    assert [(a["offset"], a["limit"]) for a in asked] == [(str(o), "2") for o in (0, 2, 4, 6)]


def test_a_hub_that_answers_one_plain_list_still_works(asked: list[dict[str, Any]]) -> None:
    with served(fake_hub(NAMES, max_limit=3, asked=asked, old=True)) as url:
        assert [u["name"] for u in Hub(url).users()] == NAMES
    assert len(asked) == 1


def test_a_hub_whose_pages_never_end_is_an_error(
    monkeypatch: pytest.MonkeyPatch, asked: list[dict[str, Any]]
) -> None:
    monkeypatch.setattr(hub_module, "MAX_PAGES", 4)
    endless = fake_hub(NAMES, max_limit=3, asked=asked, endless=True)
    with served(endless) as url, pytest.raises(HubError, match="past 4 pages"):
        Hub(url).users()
    assert len(asked) == 4
