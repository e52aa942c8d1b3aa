"""Shortcuts for the product tests: create products through the API, read rows back."""

import json
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import func, select

from app.products.models import Product
from tests.support import Account, DatabaseProbe

PRODUCTS = "/api/v1/products"
PRODUCT_FIELDS = {
    "id",
    "name",
    "description",
    "price",
    "tax",
    "sku",
    "owner_id",
    "created_at",
    "updated_at",
    "version",
}


def product_url(product_id: int | str) -> str:
    return f"{PRODUCTS}/{product_id}"


async def create_product(
    client: httpx.AsyncClient, owner: Account, **fields: Any
) -> dict[str, Any]:
    """Creates a product as `owner` (name and price default) and returns the body."""
    body = {"name": "Espresso cup", "price": "12.50", **fields}
    response = await client.post(PRODUCTS, json=body, headers=owner.headers)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def post_raw(
    client: httpx.AsyncClient, owner: Account, text: str, method: str = "POST", url: str = PRODUCTS
) -> httpx.Response:
    """Sends `text` as the body verbatim, for JSON that httpx would not produce."""
    headers = {**owner.headers, "Content-Type": "application/json"}
    return await client.request(method, url, content=text.encode("utf-8"), headers=headers)


def decimal_json(response: httpx.Response) -> Any:
    """The body with JSON numbers read as Decimal, so a number and a string stay apart."""
    return json.loads(response.text, parse_float=Decimal, parse_int=Decimal)


async def count_products(db: DatabaseProbe) -> int:
    return await db.scalar(select(func.count()).select_from(Product)) or 0


async def stored(db: DatabaseProbe, product_id: int) -> Product:
    product = await db.get(Product, product_id)
    assert product is not None, f"product {product_id} is not in the database"
    return product
