"""GET /api/v1/products: the page, its filters, sorting and stable paging.

Covers API.md's list query: anyone may list; the page shape
`{"items", "total", "limit", "offset"}` and its defaults; `q` (case-insensitive
substring of name or description, empty = absent, SQL and LIKE wildcards are
plain text); `min_price` / `max_price` (inclusive, price rules, min above max
is 422); `owner_id`; `sort` with optional `-`; ties broken by id; bad values
of known parameters get 422, unknown parameters are ignored.
"""

from decimal import Decimal
from typing import Any

import httpx
import pytest

from app.products.repository import _list_statements, _Shape, _values
from app.products.schemas import ProductQuery
from tests.products.helpers import PRODUCT_FIELDS, PRODUCTS, create_product, decimal_json
from tests.support import Account, assert_problem, error_locations


async def list_products(client: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    response = await client.get(PRODUCTS, params=params)
    assert response.status_code == 200, response.text
    page: dict[str, Any] = response.json()
    return page


def ids(page: dict[str, Any]) -> list[int]:
    return [item["id"] for item in page["items"]]


async def make_catalogue(
    client: httpx.AsyncClient, owner: Account, *specs: tuple[str, str]
) -> list[dict[str, Any]]:
    """Products from (name, price) pairs, created in order."""
    return [await create_product(client, owner, name=name, price=price) for name, price in specs]


async def test_empty_catalogue_is_an_empty_page(client: httpx.AsyncClient) -> None:
    response = await client.get(PRODUCTS)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"items": [], "total": 0, "limit": 20, "offset": 0}


async def test_anyone_lists_everyones_products_by_id(
    client: httpx.AsyncClient, user: Account, other_user: Account
) -> None:
    first = await create_product(client, user, name="One", description="d", tax="1", sku="S-1")
    second = await create_product(client, other_user, name="Two")

    for headers in ({}, user.headers, other_user.headers):
        response = await client.get(PRODUCTS, headers=headers)
        assert response.status_code == 200
        page = response.json()
        assert set(page) == {"items", "total", "limit", "offset"}
        assert page["items"] == [first, second]
        assert page["total"] == 2
        for item in page["items"]:
            assert set(item) == PRODUCT_FIELDS


async def test_prices_in_the_list_are_json_numbers(
    client: httpx.AsyncClient, user: Account
) -> None:
    await create_product(client, user, price="12.50", tax="0.05")
    response = await client.get(PRODUCTS)
    item = decimal_json(response)["items"][0]
    assert isinstance(item["price"], Decimal)
    assert isinstance(item["tax"], Decimal)
    assert (item["price"], item["tax"]) == (Decimal("12.5"), Decimal("0.05"))


async def test_default_limit_is_20_and_total_counts_every_match(
    client: httpx.AsyncClient, user: Account
) -> None:
    created = [await create_product(client, user, name=f"P{i:02d}") for i in range(23)]

    page = await list_products(client)

    assert (page["limit"], page["offset"], page["total"]) == (20, 0, 23)
    assert ids(page) == [p["id"] for p in created[:20]]
    rest = await list_products(client, offset=20)
    assert ids(rest) == [p["id"] for p in created[20:]]
    assert (rest["limit"], rest["offset"], rest["total"]) == (20, 20, 23)


@pytest.mark.parametrize(("limit", "offset"), [(1, 0), (2, 1), (100, 0), (3, 4), (5, 99)])
async def test_limit_and_offset_select_the_window(
    client: httpx.AsyncClient, user: Account, limit: int, offset: int
) -> None:
    created = await make_catalogue(client, user, *[(f"P{i}", "1") for i in range(6)])

    page = await list_products(client, limit=limit, offset=offset)

    assert ids(page) == [p["id"] for p in created][offset : offset + limit]
    assert (page["limit"], page["offset"], page["total"]) == (limit, offset, 6)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("limit", "0"),
        ("limit", "101"),
        ("limit", "-1"),
        ("limit", "abc"),
        ("limit", "1.5"),
        ("limit", ""),
        ("offset", "-1"),
        ("offset", "abc"),
        ("offset", str(2**63)),
        ("q", "x" * 101),
        ("q", "\x00"),
        ("min_price", "abc"),
        ("min_price", "1.234"),
        ("min_price", "-1"),
        ("min_price", "NaN"),
        ("max_price", "Infinity"),
        ("max_price", "1000000000.01"),
        ("max_price", "1_000"),
        ("max_price", " 5"),
        ("owner_id", "0"),
        ("owner_id", "-3"),
        ("owner_id", "abc"),
        ("owner_id", str(2**63)),
        ("sort", "colour"),
        ("sort", "+price"),
        ("sort", "--price"),
        ("sort", "PRICE"),
        ("sort", "description"),
        ("sort", "owner_id"),
        ("sort", ""),
        ("sort", "id,name"),
    ],
)
async def test_a_known_parameter_with_a_bad_value_is_422(
    client: httpx.AsyncClient, user: Account, name: str, value: str
) -> None:
    await create_product(client, user)
    response = await client.get(PRODUCTS, params={name: value})
    assert_problem(response, 422)
    assert ["query", name] in error_locations(response), response.text


async def test_min_price_above_max_price_is_422(client: httpx.AsyncClient) -> None:
    response = await client.get(PRODUCTS, params={"min_price": "10.01", "max_price": "10"})
    assert_problem(response, 422)


async def test_unknown_query_parameters_are_ignored(
    client: httpx.AsyncClient, user: Account
) -> None:
    await make_catalogue(client, user, ("A", "1"), ("B", "2"))
    plain = await list_products(client)
    extra = await list_products(client, colour="red", page="x", LIMIT="0", Sort="bogus")
    assert extra == plain


async def test_q_is_a_case_insensitive_substring_of_name_or_description(
    client: httpx.AsyncClient, user: Account
) -> None:
    in_name = await create_product(client, user, name="Blue Teapot")
    in_description = await create_product(
        client, user, name="Kettle", description="Goes with the TEAPOT set."
    )
    await create_product(client, user, name="Mug", description="Tea not included")
    await create_product(client, user, name="Tea", description=None)

    for q in ("teapot", "TEAPOT", "eaPo"):
        page = await list_products(client, q=q)
        assert ids(page) == [in_name["id"], in_description["id"]], q
        assert page["total"] == 2


async def test_q_matches_non_ascii_letters_in_either_case(
    client: httpx.AsyncClient, user: Account
) -> None:
    product = await create_product(client, user, name="Crème Brûlée dish")
    await create_product(client, user, name="Creme brulee spoon")
    page = await list_products(client, q="BRÛLÉE")
    assert ids(page) == [product["id"]]


async def test_empty_q_is_the_same_as_no_q(client: httpx.AsyncClient, user: Account) -> None:
    await make_catalogue(client, user, ("A", "1"), ("B", "2"), ("C", "3"))
    assert await list_products(client, q="") == await list_products(client)
    assert (await list_products(client, q=""))["total"] == 3


async def test_q_of_100_characters_is_accepted(client: httpx.AsyncClient, user: Account) -> None:
    product = await create_product(client, user, name="x" * 150)
    page = await list_products(client, q="x" * 100)
    assert ids(page) == [product["id"]]


@pytest.mark.parametrize(
    "q",
    [
        "' OR 1=1 --",
        "'; DROP TABLE products; --",
        '" OR ""="',
        "1) OR (1=1",
        "\\",
    ],
)
async def test_q_with_sql_in_it_is_just_text(
    client: httpx.AsyncClient, user: Account, q: str
) -> None:
    await make_catalogue(client, user, ("Cup", "1"), ("Plate", "2"))

    page = await list_products(client, q=q)

    assert (page["items"], page["total"]) == ([], 0)
    assert (await list_products(client))["total"] == 2


async def test_q_finds_text_that_looks_like_sql(client: httpx.AsyncClient, user: Account) -> None:
    odd = await create_product(client, user, name="Sign: ' OR 1=1 --")
    await create_product(client, user, name="Cup")
    assert ids(await list_products(client, q="' or 1=1")) == [odd["id"]]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("%", ["percent", "escaped percent"]),
        ("_", ["underscore"]),
        ("\\", ["slash"]),
        # "/" is the escape character of the LIKE the service sends: literal too.
        ("/", ["solidus", "escaped percent", "double solidus"]),
        ("/%", ["escaped percent"]),
        ("//", ["double solidus"]),
        ("0%", ["percent"]),
        ("e_c", ["underscore"]),
    ],
)
async def test_like_wildcards_in_q_match_only_themselves(
    client: httpx.AsyncClient, user: Account, q: str, expected: list[str]
) -> None:
    products = {
        "percent": await create_product(client, user, name="100% cotton"),
        "underscore": await create_product(client, user, name="snake_case"),
        "slash": await create_product(client, user, name="back\\slash"),
        "solidus": await create_product(client, user, name="1/2 price"),
        "escaped percent": await create_product(client, user, name="a/%b"),
        "double solidus": await create_product(client, user, name="x//y"),
        "plain": await create_product(client, user, name="Plain cotton snakecase 100"),
    }
    page = await list_products(client, q=q)
    assert ids(page) == sorted(products[key]["id"] for key in expected)


async def test_like_wildcards_inside_a_longer_q(client: httpx.AsyncClient, user: Account) -> None:
    exact = await create_product(client, user, name="50% off")
    await create_product(client, user, name="50 cents off")
    await create_product(client, user, name="500 off")
    assert ids(await list_products(client, q="50% o")) == [exact["id"]]
    snake = await create_product(client, user, name="a_b")
    await create_product(client, user, name="axb")
    assert ids(await list_products(client, q="a_b")) == [snake["id"]]


async def test_price_bounds_are_inclusive(client: httpx.AsyncClient, user: Account) -> None:
    cheap, low, mid, high, dear = await make_catalogue(
        client, user, ("a", "0"), ("b", "9.99"), ("c", "10"), ("d", "20.00"), ("e", "20.01")
    )

    assert ids(await list_products(client, min_price="10", max_price="20")) == [
        mid["id"],
        high["id"],
    ]
    assert ids(await list_products(client, min_price="9.99")) == [
        low["id"],
        mid["id"],
        high["id"],
        dear["id"],
    ]
    assert ids(await list_products(client, max_price="0")) == [cheap["id"]]
    assert ids(await list_products(client, min_price="20.01", max_price="20.01")) == [dear["id"]]
    assert (await list_products(client, min_price="10.00", max_price="10"))["total"] == 1
    assert (await list_products(client, min_price="1000000000"))["total"] == 0


async def test_price_bounds_accept_the_price_forms(
    client: httpx.AsyncClient, user: Account
) -> None:
    await make_catalogue(client, user, ("a", "5"), ("b", "15"))
    for bound in ("10", "10.0", "10.00"):
        page = await list_products(client, min_price=bound)
        assert page["total"] == 1, bound


@pytest.mark.parametrize("bound", ["1e1", "10.000", "010", "+10", " 10"])
async def test_price_bounds_are_plain_decimal_strings(
    client: httpx.AsyncClient, bound: str
) -> None:
    # The documented numeric-string form (the OpenAPI pattern): digits and at
    # most two decimals; anything else is refused rather than guessed at.
    response = await client.get("/api/v1/products", params={"min_price": bound})
    assert_problem(response, 422)
    assert ["query", "min_price"] in error_locations(response)


async def test_owner_id_filters_by_owner(
    client: httpx.AsyncClient, user: Account, other_user: Account
) -> None:
    mine = [await create_product(client, user, name=f"Mine {i}") for i in range(3)]
    theirs = await create_product(client, other_user, name="Theirs")

    page = await list_products(client, owner_id=user.id)
    assert ids(page) == [p["id"] for p in mine]
    assert page["total"] == 3
    assert ids(await list_products(client, owner_id=other_user.id)) == [theirs["id"]]


async def test_unknown_owner_id_is_an_empty_page(client: httpx.AsyncClient, user: Account) -> None:
    await create_product(client, user)
    page = await list_products(client, owner_id=987654)
    assert page == {"items": [], "total": 0, "limit": 20, "offset": 0}


async def test_filters_combine_and_total_counts_all_matches(
    client: httpx.AsyncClient, user: Account, other_user: Account
) -> None:
    wanted = [
        await create_product(client, user, name=f"Blue cup {i}", price=str(10 + i))
        for i in range(5)
    ]
    await create_product(client, user, name="Blue cup cheap", price="1")
    await create_product(client, user, name="Red cup", price="12")
    await create_product(client, other_user, name="Blue cup theirs", price="12")

    query = {"q": "blue", "min_price": "10", "max_price": "20", "owner_id": user.id}
    first = await list_products(client, **query, limit=2, sort="-price")
    second = await list_products(client, **query, limit=2, offset=2, sort="-price")
    last = await list_products(client, **query, limit=2, offset=4, sort="-price")

    assert first["total"] == second["total"] == last["total"] == 5
    assert ids(first) + ids(second) + ids(last) == [p["id"] for p in reversed(wanted)]


async def test_offset_past_the_end_is_an_empty_page_with_the_total(
    client: httpx.AsyncClient, user: Account
) -> None:
    await make_catalogue(client, user, ("a", "1"), ("b", "2"))
    page = await list_products(client, offset=50)
    assert page == {"items": [], "total": 2, "limit": 20, "offset": 50}


@pytest.mark.parametrize(
    ("sort", "key"),
    [
        ("id", lambda p: p["id"]),
        ("-id", lambda p: -p["id"]),
        ("name", lambda p: (p["name"], p["id"])),
        ("-name", lambda p: (tuple(-ord(c) for c in p["name"]), p["id"])),
        ("price", lambda p: (Decimal(str(p["price"])), p["id"])),
        ("-price", lambda p: (-Decimal(str(p["price"])), p["id"])),
        ("created_at", lambda p: (p["created_at"], p["id"])),
    ],
)
async def test_sort_orders_by_the_field_and_breaks_ties_by_id(
    client: httpx.AsyncClient, user: Account, sort: str, key: Any
) -> None:
    # Lower-case ASCII names sort the same under every collation.
    created = await make_catalogue(
        client,
        user,
        ("delta", "5"),
        ("alpha", "7.50"),
        ("charlie", "5"),
        ("bravo", "0.99"),
        ("alpha", "5"),
        ("echo", "7.5"),
    )

    page = await list_products(client, sort=sort)

    assert ids(page) == [p["id"] for p in sorted(created, key=key)]


async def test_sort_by_created_at_descending_is_newest_first(
    client: httpx.AsyncClient, user: Account
) -> None:
    created = await make_catalogue(client, user, ("a", "1"), ("b", "1"), ("c", "1"))
    page = await list_products(client, sort="-created_at")
    stamps = [item["created_at"] for item in page["items"]]
    assert stamps == sorted(stamps, reverse=True)
    assert set(ids(page)) == {p["id"] for p in created}


@pytest.mark.parametrize("sort", ["price", "-price", "name", "-name", "created_at"])
async def test_paging_over_equal_values_is_stable_and_complete(
    client: httpx.AsyncClient, user: Account, sort: str
) -> None:
    specs = [("same", "5")] * 7 + [("other", "3")] * 4 + [("same", "3")] * 2
    created = await make_catalogue(client, user, *specs)

    seen: list[int] = []
    for offset in range(0, len(created), 3):
        page = await list_products(client, sort=sort, limit=3, offset=offset)
        assert page["total"] == len(created)
        seen.extend(ids(page))

    assert len(seen) == len(set(seen)) == len(created)
    assert set(seen) == {p["id"] for p in created}
    whole = await list_products(client, sort=sort, limit=100)
    assert seen == ids(whole)


async def test_list_with_trailing_slash_is_the_same(
    client: httpx.AsyncClient, user: Account
) -> None:
    await make_catalogue(client, user, ("a", "1"), ("b", "2"))
    plain = await client.get(PRODUCTS, params={"sort": "-price", "limit": 1})
    slashed = await client.get(f"{PRODUCTS}/", params={"sort": "-price", "limit": 1})
    assert slashed.status_code == 200
    assert slashed.json() == plain.json()


async def test_a_short_q_finds_what_a_long_one_would(
    client: httpx.AsyncClient, user: Account
) -> None:
    """One or two characters have no trigram: the search is the same, the
    statement another (see the next test)."""
    inky = await create_product(client, user, name="Inky pen", description="blue")
    okra = await create_product(client, user, name="OKRA", description="green")
    await create_product(client, user, name="Pen", description="red")
    page = await list_products(client, q="Ok")
    assert ids(page) == [okra["id"]]
    assert page["total"] == 1
    assert ids(await list_products(client, q="k")) == [inky["id"], okra["id"]]


async def test_no_plan_of_a_short_q_reads_the_trigram_index(backend: str, app: Any) -> None:
    """A generic plan (what PostgreSQL may keep for a prepared statement after
    five executions) made without the pattern must not read the trigram
    index for a q it cannot serve: at a million rows that took 4.8 s."""
    if backend != "postgresql":
        pytest.skip("a PostgreSQL plan")

    async def generic_plan(q: str) -> str:
        query = ProductQuery(q=q)
        statement = _list_statements(_Shape.of(query, postgresql=True)).page
        async with app.state.database.engine.connect() as connection:
            compiled = statement.compile(dialect=connection.dialect)
            values = compiled.construct_params(_values(query, 10_000))
            arguments = ", ".join(
                "NULL" if values[name] is None else f"'{values[name]}'"
                for name in compiled.positiontup or ()
            )
            await connection.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
            # As a large table would: a scan of the whole table made dear.
            await connection.exec_driver_sql("SET enable_seqscan = off")
            await connection.exec_driver_sql(f"PREPARE page AS {compiled}")
            plan = await connection.exec_driver_sql(f"EXPLAIN EXECUTE page({arguments})")
            await connection.exec_driver_sql("DEALLOCATE page")
            return "\n".join(row[0] for row in plan)

    assert "ix_products_search_text" in await generic_plan("teapot")  # the index, where it serves
    assert "ix_products_search_text" not in await generic_plan("ok")
    assert "ix_products_search_text" not in await generic_plan("k")
