"""GET /api/v1/products by `cursor`: keyset paging, `total` at scale, and `q` on search_text.

Covers what a client sees of the list's `cursor` and of the `Link` header
(`rel="next"`) that hands out the next page's; `next_cursor` below is that
link's cursor, or None when a page has no link:

- following `next_cursor` until it is null visits every matching product once,
  in the order of one big offset page, for every sort (ties in name, price
  and created_at broken by id) and with the filters (`q`, price bounds,
  `owner_id`);
- `next_cursor` is null on the last page and on an empty page, present while
  more exist; a page asked by cursor reports `offset` 0; a cursor from an
  offset page continues after it;
- products created after a cursor was handed out show up if they sort after
  it; deleted ones (even the cursor's own product) shift nothing;
- a cursor this service did not make, or made for another sort, or sent with
  `offset`, is a 422 problem on `cursor`, never a 500; a well-formed cursor at
  the edges of its values is a page;
- `total` (schemas.TOTAL_DESCRIPTION): exact below `exact_total_limit`; with
  a tiny limit never below what the pages prove, above the limit when more
  match, exact on the last page of an offset walk, and always exact on SQLite;
- `q` still matches name or description case-insensitively (also non-ASCII),
  never across the name/description boundary, and follows changes of the
  product (LIKE wildcards and the escape character: test_list.py).

The format of a cursor (base64url of `[sort, value, id]`, app/products/
paging.py) is used here only to forge damaged or edge-case cursors.
"""

import base64
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update

from app.core.config import Settings
from app.core.models import MAX_ID
from app.products.models import Product
from tests.products.helpers import PRODUCTS, create_product, product_url
from tests.support import Account, assert_problem, client_for, error_locations

SORTS = ["id", "-id", "name", "-name", "price", "-price", "created_at", "-created_at"]
# A walk that has not ended after this many pages never will.
MAX_PAGES = 100
# A moment before any product the tests create: products moved to it tie on created_at.
LONG_AGO = datetime(2020, 1, 1, tzinfo=UTC)

# Lower-case ASCII names (ordered alike under every collation) with ties in
# name and in price, the cheapest and the dearest price a product may have.
CATALOGUE = [
    ("delta", "5"),
    ("alpha", "7.50"),
    ("charlie", "5"),
    ("bravo", "0.99"),
    ("alpha", "5"),
    ("echo", "7.5"),
    ("alpha", "0"),
    ("delta", "1000000000"),
    ("charlie", "5.00"),
    ("foxtrot", "0"),
    ("alpha", "7.5"),
]


async def list_page(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    """The page's body, with the cursor its `Link: <...>; rel="next"` carries as next_cursor."""
    response = await client.get(PRODUCTS, params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    assert set(page) == {"items", "total", "limit", "offset"}  # API.md's page, unchanged
    page["next_cursor"] = next_cursor(response, params)
    return page


def next_cursor(response: httpx.Response, params: dict[str, Any]) -> str | None:
    """The `cursor` of the next page's link, checked to be this query's next page."""
    if "link" not in response.headers:
        return None
    link = response.links["next"]["url"]
    assert link.startswith(PRODUCTS + "?"), link  # relative, like Location
    query = dict(httpx.URL(link).params.multi_items())
    cursor = query.pop("cursor")
    # The same query otherwise, without an offset: each parameter as sent.
    expected = {k: str(v) for k, v in params.items() if k not in ("offset", "cursor")}
    assert query == expected, (query, expected)
    return cursor


def ids(*pages: dict[str, Any]) -> list[int]:
    return [item["id"] for page in pages for item in page["items"]]


async def walk(
    client: httpx.AsyncClient, limit: int, cursor: str | None = None, **params: Any
) -> list[dict[str, Any]]:
    """Every page from the first one (or `cursor`) on, following `next_cursor` until null.

    Checks what each page promises: full while another follows, `offset` 0
    once asked by cursor, the `limit` asked for.
    """
    start = {} if cursor is None else {"cursor": cursor}
    pages = [await list_page(client, limit=limit, **start, **params)]
    while (cursor := pages[-1]["next_cursor"]) is not None:
        assert len(pages) < MAX_PAGES, "next_cursor never became null"
        pages.append(await list_page(client, limit=limit, cursor=cursor, **params))
    for page in pages:
        assert page["limit"] == limit
    for page in pages[:-1]:
        assert len(page["items"]) == limit, page
        assert isinstance(page["next_cursor"], str)
    for page in pages[0 if start else 1 :]:
        assert page["offset"] == 0
    return pages


async def everything(client: httpx.AsyncClient, **params: Any) -> list[int]:
    """The ids of one big offset page: the order a walk must reproduce."""
    page = await list_page(client, limit=100, **params)
    assert page["next_cursor"] is None
    return ids(page)


async def make_catalogue(
    client: httpx.AsyncClient, owner: Account, specs: list[tuple[str, str]] = CATALOGUE
) -> list[dict[str, Any]]:
    """Products from (name, price) pairs, created in order."""
    return [await create_product(client, owner, name=name, price=price) for name, price in specs]


async def move_to_long_ago(app: FastAPI, *product_ids: int) -> None:
    """Gives these products one and the same created_at (the API cannot set it)."""
    async with app.state.database.sessionmaker() as session, session.begin():
        await session.execute(
            update(Product).where(Product.id.in_(product_ids)).values(created_at=LONG_AGO)
        )


def forge(*parts: Any) -> str:
    """A cursor as this service writes one, from any JSON value (usually [sort, value, id])."""
    raw = json.dumps(parts[0] if len(parts) == 1 else list(parts), ensure_ascii=False)
    return base64url(raw.encode())


def base64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


# --- walking the list ------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 3])
@pytest.mark.parametrize("sort", SORTS)
async def test_following_next_cursor_visits_every_product_once_in_order(
    client: httpx.AsyncClient, app: FastAPI, user: Account, sort: str, limit: int
) -> None:
    created = await make_catalogue(client, user)
    # Three products share a created_at, so that sort has ties to break by id too.
    await move_to_long_ago(app, created[1]["id"], created[4]["id"], created[8]["id"])

    pages = await walk(client, limit, sort=sort)

    walked = ids(*pages)
    assert walked == await everything(client, sort=sort)
    assert len(walked) == len(set(walked)) == len(created)
    assert pages[-1]["next_cursor"] is None
    assert {page["total"] for page in pages} == {len(created)}


@pytest.mark.parametrize("sort", SORTS)
async def test_following_next_cursor_keeps_the_filters(
    client: httpx.AsyncClient, user: Account, other_user: Account, sort: str
) -> None:
    specs = [
        (user, "blue cup", "10"),
        (user, "Blue cup", "10"),
        (user, "red cup", "10"),
        (other_user, "blue cup", "15"),
        (user, "blue cup", "20"),
        (user, "blue plate", "20.00"),
        (user, "blue cup", "2"),
        (other_user, "green cup", "12"),
        (user, "blue cup", "12.5"),
        (user, "BLUE CUP", "12.50"),
    ]
    created = [
        await create_product(client, owner, name=name, price=price) for owner, name, price in specs
    ]

    def matching(keep: Any) -> set[int]:
        return {p["id"] for p in created if keep(p)}

    in_range = {"min_price": "10", "max_price": "20"}
    cases: list[tuple[dict[str, Any], set[int]]] = [
        ({"q": "blue cup"}, matching(lambda p: p["name"].lower() == "blue cup")),
        (in_range, matching(lambda p: 10 <= float(p["price"]) <= 20)),
        ({"owner_id": other_user.id}, matching(lambda p: p["owner_id"] == other_user.id)),
        (
            {"q": "BLUE", **in_range, "owner_id": user.id},
            matching(
                lambda p: (
                    "blue" in p["name"].lower()
                    and 10 <= float(p["price"]) <= 20
                    and p["owner_id"] == user.id
                )
            ),
        ),
    ]
    for query, expected in cases:
        pages = await walk(client, 2, sort=sort, **query)
        walked = ids(*pages)
        assert walked == await everything(client, sort=sort, **query), query
        assert len(walked) == len(set(walked)), query
        assert set(walked) == expected, query
        assert {page["total"] for page in pages} == {len(expected)}, query


async def test_names_of_any_text_survive_the_cursor(
    client: httpx.AsyncClient, user: Account
) -> None:
    # The longest name of the widest characters, quotes, backslashes, LIKE
    # wildcards and SQL: each one is the end of a page (limit 1) once.
    names = [
        "\U0001f375" * 200,
        "\U0001f375" * 200,
        "\U0001f375" * 199 + "\U0001f376",
        'say "cheese" \\ now',
        "100% _cotton_",
        "'; DROP TABLE products; --",
        "Crème brûlée",
        "\u2028 separator",
        "x" * 200,
    ]
    created = [await create_product(client, user, name=name) for name in names]

    for sort in ("name", "-name"):
        pages = await walk(client, 1, sort=sort)
        assert ids(*pages) == await everything(client, sort=sort)
        assert sorted(ids(*pages)) == [p["id"] for p in created]
        assert max(len(page["next_cursor"] or "") for page in pages) <= 4096


async def test_the_limit_may_change_between_pages(client: httpx.AsyncClient, user: Account) -> None:
    await make_catalogue(client, user)
    order = await everything(client, sort="-price")

    first = await list_page(client, sort="-price", limit=2)
    second = await list_page(client, sort="-price", limit=5, cursor=first["next_cursor"])
    third = await list_page(client, sort="-price", limit=100, cursor=second["next_cursor"])

    assert ids(first, second, third) == order
    assert (len(second["items"]), second["limit"], third["next_cursor"]) == (5, 5, None)


# --- next_cursor and offset ------------------------------------------------------------------


async def test_next_cursor_is_null_on_an_empty_page(
    client: httpx.AsyncClient, user: Account
) -> None:
    assert (await list_page(client))["next_cursor"] is None
    await make_catalogue(client, user)
    for query in (
        {"q": "nothing like it"},
        {"min_price": "6", "max_price": "7"},
        {"owner_id": MAX_ID},
    ):
        page = await list_page(client, limit=1, **query)
        assert (page["items"], page["total"], page["next_cursor"]) == ([], 0, None), query


@pytest.mark.parametrize("count", [1, 2, 3, 4])
async def test_next_cursor_is_present_exactly_while_more_products_follow(
    client: httpx.AsyncClient, user: Account, count: int
) -> None:
    created = await make_catalogue(client, user, CATALOGUE[:count])
    limit = 2

    first = await list_page(client, limit=limit)

    assert ids(first) == [p["id"] for p in created[:limit]]
    if count <= limit:  # this page holds them all: a full last page has no next one either
        assert first["next_cursor"] is None
        return
    assert isinstance(first["next_cursor"], str)
    rest = await list_page(client, limit=limit, cursor=first["next_cursor"])
    assert ids(rest) == [p["id"] for p in created[limit:]]
    assert rest["next_cursor"] is None
    assert (rest["offset"], rest["limit"], rest["total"]) == (0, limit, count)


async def test_a_cursor_from_an_offset_page_continues_after_it(
    client: httpx.AsyncClient, user: Account
) -> None:
    await make_catalogue(client, user)
    order = await everything(client, sort="name")

    middle = await list_page(client, sort="name", limit=3, offset=4)
    after = await list_page(client, sort="name", limit=3, cursor=middle["next_cursor"])

    assert middle["offset"] == 4
    assert ids(middle) == order[4:7]
    assert ids(after) == order[7:10]
    assert after["offset"] == 0


async def test_without_sort_the_cursor_follows_the_default_order(
    client: httpx.AsyncClient, user: Account
) -> None:
    created = await make_catalogue(client, user)
    pages = await walk(client, 4)
    assert ids(*pages) == [p["id"] for p in created]
    # The default sort is `id`: its cursor goes with sort=id too.
    explicit = await list_page(client, sort="id", limit=4, cursor=pages[0]["next_cursor"])
    assert ids(explicit) == ids(pages[1])


# --- changes between pages -------------------------------------------------------------------

# For each sort, a new product that sorts before every existing one ("early")
# and one that sorts after every existing one ("late"), where one can exist.
NEWCOMERS: list[tuple[str, dict[str, str] | None, dict[str, str] | None]] = [
    ("id", None, {}),
    ("-id", {}, None),
    ("name", {"name": "aaaa"}, {"name": "zzzz"}),
    ("-name", {"name": "zzzz"}, {"name": "aaaa"}),
    ("price", {"price": "0.50"}, {"price": "500"}),
    ("-price", {"price": "500"}, {"price": "0.50"}),
    ("created_at", None, {}),
    ("-created_at", {}, None),
]


@pytest.mark.parametrize(("sort", "early", "late"), NEWCOMERS)
async def test_changes_after_a_cursor_was_handed_out_shift_no_page(
    client: httpx.AsyncClient,
    user: Account,
    sort: str,
    early: dict[str, str] | None,
    late: dict[str, str] | None,
) -> None:
    # Nine products, prices tied in threes, names between "aaaa" and "zzzz".
    specs = [(name, str(1 + i % 3)) for i, name in enumerate("bcdefghij")]
    await make_catalogue(client, user, specs)
    before = await everything(client, sort=sort)
    first = await list_page(client, sort=sort, limit=3)
    assert ids(first) == before[:3]

    # Meanwhile: the cursor's own product and one of the next page go away,
    # and new products arrive on either side of the cursor.
    gone = [before[2], before[4]]
    for product_id in gone:
        response = await client.delete(product_url(product_id), headers=user.headers)
        assert response.status_code == 204
    arrived_early = None if early is None else await create_product(client, user, **early)
    arrived_late = None if late is None else await create_product(client, user, **late)

    rest = await walk(client, 3, sort=sort, cursor=first["next_cursor"])

    expected = [i for i in before[3:] if i not in gone]
    if arrived_late is not None:
        expected.append(arrived_late["id"])
    assert ids(*rest) == expected
    if arrived_early is not None:
        assert (await everything(client, sort=sort))[0] == arrived_early["id"]


async def test_a_cursor_past_every_product_is_an_empty_last_page(
    client: httpx.AsyncClient, user: Account
) -> None:
    created = await make_catalogue(client, user, CATALOGUE[:3])
    first = await list_page(client, limit=2)
    response = await client.delete(product_url(created[2]["id"]), headers=user.headers)
    assert response.status_code == 204

    page = await list_page(client, limit=2, cursor=first["next_cursor"])

    assert page == {"items": [], "total": 2, "limit": 2, "offset": 0, "next_cursor": None}


# --- cursors the service did not make --------------------------------------------------------


BAD_CURSORS = [
    pytest.param("garbage!", "id", id="not-base64url"),
    pytest.param("abc def", "id", id="space"),
    pytest.param("a+b/c", "id", id="standard-base64-alphabet"),
    pytest.param("ab%00", "id", id="percent-escape"),
    pytest.param("x", "id", id="one-character"),
    pytest.param("é" * 8, "id", id="non-ascii"),
    pytest.param(base64url(b"hello, world"), "id", id="not-json"),
    pytest.param(base64url(b"\xff\xfe\xfd"), "id", id="not-utf8"),
    pytest.param(forge({"sort": "id", "id": 1}), "id", id="object"),
    pytest.param(forge("id"), "id", id="string"),
    pytest.param(forge(None), "id", id="null"),
    pytest.param(forge([]), "id", id="empty-array"),
    pytest.param(forge(["id", None]), "id", id="two-items"),
    pytest.param(forge("id", None, 1, 2), "id", id="four-items"),
    pytest.param(base64url(b"[" * 1100 + b"]" * 1100), "id", id="deeply-nested"),
    pytest.param(forge("id", None, 0), "id", id="id-zero"),
    pytest.param(forge("id", None, -1), "id", id="id-negative"),
    pytest.param(forge("id", None, MAX_ID + 1), "id", id="id-huge"),
    pytest.param(forge("id", None, 10**400), "id", id="id-400-digits"),
    pytest.param(forge("id", None, 1.5), "id", id="id-float"),
    pytest.param(forge("id", None, 1.0), "id", id="id-integral-float"),
    pytest.param(base64url(b'["id",null,1e400]'), "id", id="id-infinite"),
    pytest.param(base64url(b'["id",null,NaN]'), "id", id="id-nan"),
    pytest.param(forge("id", None, True), "id", id="id-bool"),
    pytest.param(forge("id", None, "1"), "id", id="id-string"),
    pytest.param(forge("id", None, None), "id", id="id-null"),
    pytest.param(forge("id", "x", 1), "id", id="id-sort-with-a-value"),
    pytest.param(forge("price", "5", 1), "price", id="price-no-cents"),
    pytest.param(forge("price", "5.0", 1), "price", id="price-one-decimal"),
    pytest.param(forge("price", "5.000", 1), "price", id="price-three-decimals"),
    pytest.param(forge("price", "05.00", 1), "price", id="price-leading-zero"),
    pytest.param(forge("price", "-1.00", 1), "price", id="price-negative"),
    pytest.param(forge("price", "1e2", 1), "-price", id="price-exponent"),
    pytest.param(forge("price", "NaN", 1), "price", id="price-nan"),
    pytest.param(forge("price", "1000000000.01", 1), "price", id="price-above-maximum"),
    pytest.param(forge("price", 5.0, 1), "price", id="price-number"),
    pytest.param(forge("price", None, 1), "price", id="price-null"),
    pytest.param(forge("created_at", "2024-01-01T00:00:00", 1), "created_at", id="time-naive"),
    pytest.param(forge("created_at", "yesterday", 1), "created_at", id="time-text"),
    pytest.param(forge("created_at", "", 1), "created_at", id="time-empty"),
    pytest.param(forge("created_at", 1700000000, 1), "created_at", id="time-number"),
    pytest.param(
        forge("-created_at", "9999-12-31T23:59:59-01:00", 1), "-created_at", id="time-past-9999"
    ),
    pytest.param(
        forge("created_at", "0001-01-01T00:00:00+01:00", 1), "created_at", id="time-before-1"
    ),
    pytest.param(forge("name", "", 1), "name", id="name-empty"),
    pytest.param(forge("name", "a\x00b", 1), "name", id="name-nul"),
    pytest.param(forge("name", "a\tb", 1), "name", id="name-tab"),
    pytest.param(forge("-name", "a\nb", 1), "-name", id="name-line-feed"),
    pytest.param(forge("name", "a\x7fb", 1), "name", id="name-delete"),
    pytest.param(forge("name", "x" * 201, 1), "name", id="name-too-long"),
    pytest.param(base64url(b'["name","\\ud800",1]'), "name", id="name-lone-surrogate"),
    pytest.param(forge("name", 5, 1), "name", id="name-number"),
    pytest.param(forge("name", None, 1), "name", id="name-null"),
    pytest.param("A" * 4097, "id", id="over-long"),
    pytest.param(forge("name", "x" * 200, 1) + "A" * 4096, "name", id="over-long-valid-prefix"),
    pytest.param("", "id", id="empty"),
]


@pytest.mark.parametrize(("cursor", "sort"), BAD_CURSORS)
async def test_a_cursor_the_service_did_not_make_is_422_on_cursor(
    client: httpx.AsyncClient, user: Account, cursor: str, sort: str
) -> None:
    await create_product(client, user)
    response = await client.get(PRODUCTS, params={"cursor": cursor, "sort": sort})
    assert_problem(response, 422)
    assert error_locations(response) == [["query", "cursor"]], response.text


@pytest.mark.parametrize(
    ("made_for", "sent_with"),
    [("name", "price"), ("price", "-price"), ("-id", "id"), ("created_at", "name")],
)
async def test_a_cursor_of_another_sort_is_422_that_says_so(
    client: httpx.AsyncClient, user: Account, made_for: str, sent_with: str
) -> None:
    await make_catalogue(client, user)
    cursor = (await list_page(client, sort=made_for, limit=2))["next_cursor"]

    response = await client.get(PRODUCTS, params={"cursor": cursor, "sort": sent_with})

    body = assert_problem(response, 422)
    assert error_locations(response) == [["query", "cursor"]]
    assert "sort" in body["errors"][0]["msg"], body


@pytest.mark.parametrize("offset", ["0", "3"])
async def test_cursor_and_offset_together_are_422(
    client: httpx.AsyncClient, user: Account, offset: str
) -> None:
    await make_catalogue(client, user)
    cursor = (await list_page(client, limit=2))["next_cursor"]

    response = await client.get(PRODUCTS, params={"cursor": cursor, "offset": offset})

    body = assert_problem(response, 422)
    messages = " ".join(error["msg"] for error in body["errors"])
    assert "cursor" in messages
    assert "offset" in messages


# Well-formed cursors at the edges of their values: a page, never a server error.
EDGE_CURSORS = [
    pytest.param("id", None, MAX_ID, "none", id="id-max"),
    pytest.param("-id", None, MAX_ID, "all", id="descending-id-max"),
    pytest.param("price", "1000000000.00", MAX_ID, "none", id="price-max"),
    pytest.param("-price", "0.00", MAX_ID, "none", id="descending-price-zero"),
    pytest.param("price", "5.00", MAX_ID, "dearer than 5", id="price-inside"),
    pytest.param("created_at", "9999-12-31T23:59:59.999999+00:00", 1, "none", id="time-max"),
    pytest.param("created_at", "0001-01-01T00:00:00+00:00", 1, "all", id="time-min"),
    pytest.param("-created_at", "2000-01-01T05:30:00+05:30", 1, "none", id="time-offset"),
    # Where these fall depends on the database's collation: some tail of the list.
    pytest.param("name", "\U0010ffff" * 200, 1, "tail", id="name-last-code-point"),
    pytest.param("-name", "'; DROP TABLE products; --", 1, "tail", id="name-sql"),
    pytest.param("name", " ", 1, "tail", id="name-space"),
]


@pytest.mark.parametrize(("sort", "value", "product_id", "expect"), EDGE_CURSORS)
async def test_a_well_formed_cursor_at_the_edges_is_a_page(
    client: httpx.AsyncClient, user: Account, sort: str, value: Any, product_id: int, expect: str
) -> None:
    created = await make_catalogue(client, user)
    order = await everything(client, sort=sort)

    page = await list_page(client, sort=sort, limit=100, cursor=forge(sort, value, product_id))

    assert (page["offset"], page["next_cursor"], page["total"]) == (0, None, len(order))
    tail = order[len(order) - len(page["items"]) :]
    expected = {
        "all": order,
        "none": [],
        "dearer than 5": [p["id"] for p in created if float(p["price"]) > 5],
        "tail": tail,
    }[expect]
    assert sorted(ids(page)) == sorted(expected)
    assert ids(page) == tail


# --- total -----------------------------------------------------------------------------------


def assert_total_is_honest(page: dict[str, Any], matching: int, limit: int, backend: str) -> None:
    """What TOTAL_DESCRIPTION promises of one page, `matching` being the true count."""
    shown = len(page["items"])
    proven = page["offset"] + shown + (1 if page["next_cursor"] else 0)
    total = page["total"]
    assert total >= proven, page
    if backend == "sqlite" or total <= limit:
        assert total == matching, page  # counted: exact
    if matching > limit:
        assert total > limit, page  # an estimate only ever stands in above the limit


@pytest.mark.parametrize("query", [{}, {"q": "a"}, {"min_price": "1"}])
async def test_total_above_a_tiny_exact_limit_is_never_below_what_pages_show(
    client: httpx.AsyncClient, user: Account, settings: Settings, backend: str, query: Any
) -> None:
    await make_catalogue(client, user)
    matching = len(await everything(client, **query))
    assert matching > 3
    tiny = settings.model_copy(update={"exact_total_limit": 3})

    async with client_for(tiny) as (_, small_limit):
        by_offset = [
            await list_page(small_limit, limit=2, offset=offset, **query)
            for offset in range(0, matching, 2)
        ]
        by_cursor = await walk(small_limit, 2, **query)

    for page in by_offset + by_cursor:
        assert_total_is_honest(page, matching, 3, backend)
    # The last page of an offset walk knows the total: it is exact there.
    assert by_offset[-1]["next_cursor"] is None
    assert by_offset[-1]["total"] == matching
    assert ids(*by_offset) == ids(*by_cursor)


async def test_a_total_within_a_tiny_exact_limit_is_exact(
    client: httpx.AsyncClient, user: Account, other_user: Account, settings: Settings, backend: str
) -> None:
    # Three matches, limit 3. PostgreSQL may still expect more than 3 (and
    # say so, above the limit) on a page with more to come; whatever total
    # it reports at or below the limit must be the count.
    await make_catalogue(client, user)
    theirs = [await create_product(client, other_user, name=f"t{i}") for i in range(3)]
    tiny = settings.model_copy(update={"exact_total_limit": 3})

    async with client_for(tiny) as (_, small_limit):
        pages = await walk(small_limit, 1, owner_id=other_user.id)
        offset_pages = [
            await list_page(small_limit, limit=1, offset=offset, owner_id=other_user.id)
            for offset in range(3)
        ]

    assert ids(*pages) == [p["id"] for p in theirs]
    for page in pages + offset_pages:
        assert_total_is_honest(page, len(theirs), 3, backend)
    # The last page of an offset walk counts itself in: exact.
    assert (ids(offset_pages[-1]), offset_pages[-1]["total"]) == ([theirs[-1]["id"]], 3)
    assert offset_pages[-1]["next_cursor"] is None


async def test_total_is_exact_on_every_page_below_the_default_limit(
    client: httpx.AsyncClient, user: Account
) -> None:
    created = await make_catalogue(client, user)
    for sort in ("price", "-created_at"):
        pages = await walk(client, 2, sort=sort)
        assert [page["total"] for page in pages] == [len(created)] * len(pages)
        deep = await list_page(client, sort=sort, limit=2, offset=6)
        assert deep["total"] == len(created)


# --- q on the stored search text ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("q", "name", "description"),
    [
        ("ÉCLAIR", "éclair au café", None),
        ("éclair", "ÉCLAIR AU CAFÉ", None),
        ("Éclair", "Choux", "Un éclair au café."),
        ("ÇA", "ça va", None),
        ("ΣΟΦΊΑ", "σοφία", None),
        ("straße", "STRAßE", None),
    ],
)
async def test_q_matches_either_field_in_any_case_also_beyond_ascii(
    client: httpx.AsyncClient, user: Account, q: str, name: str, description: str | None
) -> None:
    product = await create_product(client, user, name=name, description=description)
    await create_product(client, user, name="Plain bread", description="No match here.")

    page = await list_page(client, q=q)

    assert ids(page) == [product["id"]]
    assert page["total"] == 1


async def test_q_never_matches_across_name_and_description(
    client: httpx.AsyncClient, user: Account
) -> None:
    product = await create_product(client, user, name="Tea", description="pot for two")
    bare = await create_product(client, user, name="Cup", description=None)

    for q in ("teapot", "tea pot", "a p", "tea\u00a0pot", "teapot for"):
        assert ids(await list_page(client, q=q)) == [], q
    for q in ("tea", "POT", "pot for two", "TEA"):
        assert ids(await list_page(client, q=q)) == [product["id"]], q
    assert ids(await list_page(client, q="cup")) == [bare["id"]]
    # A tab, what joins the two fields in the searched text, cannot be sent.
    response = await client.get(PRODUCTS, params={"q": "tea\tpot"})
    assert_problem(response, 422)
    assert ["query", "q"] in error_locations(response)


async def test_q_follows_changes_to_the_product(client: httpx.AsyncClient, user: Account) -> None:
    product = await create_product(client, user, name="Old teapot", description="Blue glaze")
    url = product_url(product["id"])

    response = await client.patch(
        url, json={"name": "New kettle", "description": None}, headers=user.headers
    )
    assert response.status_code == 200, response.text

    for gone in ("teapot", "blue"):
        assert ids(await list_page(client, q=gone)) == [], gone
    assert ids(await list_page(client, q="KETTLE")) == [product["id"]]

    response = await client.put(
        url, json={"name": "Mug", "price": "3", "description": "Ivory glaze"}, headers=user.headers
    )
    assert response.status_code == 200, response.text
    assert ids(await list_page(client, q="kettle")) == []
    assert ids(await list_page(client, q="ivory")) == [product["id"]]


async def test_q_walks_by_cursor_like_any_filter(client: httpx.AsyncClient, user: Account) -> None:
    wanted = [
        await create_product(client, user, name=f"Café {i % 3}", description="crème", price=str(i))
        for i in range(7)
    ]
    await create_product(client, user, name="Tea", description="creme without accent")

    pages = await walk(client, 2, q="CRÈME", sort="-name")

    assert ids(*pages) == await everything(client, q="CRÈME", sort="-name")
    assert sorted(ids(*pages)) == [p["id"] for p in wanted]
