from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.database import flush_unique
from app.core.models import utc_now
from app.products.models import Product
from app.products.schemas import ProductQuery

_UNIQUE_KEYS = {"sku": ("uq_products_sku", "products.sku")}
_SORT_COLUMNS = {
    "id": Product.id,
    "name": Product.name,
    "price": Product.price,
    "created_at": Product.created_at,
}


class ProductRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, product_id: int) -> Product | None:
        return await self._session.get(Product, product_id)

    async def get_for_update(self, product_id: int) -> Product | None:
        """The product, its row locked until the transaction ends.

        Changes read, check and write under this lock, so concurrent updates
        apply one after the other and each sees the version the previous
        one left (SQLite, which has no row locks, serialises whole
        transactions instead).
        """
        statement = (
            select(Product)
            .where(Product.id == product_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return (await self._session.scalars(statement)).first()

    async def list(self, query: ProductQuery) -> tuple[Sequence[Product], int]:
        filters = _filters(query)
        column = _SORT_COLUMNS[query.sort.removeprefix("-")]
        order = column.desc() if query.sort.startswith("-") else column.asc()
        statement = (
            select(Product)
            .where(*filters)
            .order_by(order, Product.id.asc())
            .limit(query.limit)
            .offset(query.offset)
        )
        items = (await self._session.scalars(statement)).all()
        total = await self._session.scalar(
            select(func.count()).select_from(Product).where(*filters)
        )
        return items, total or 0

    async def add(self, product: Product) -> Product:
        self._session.add(product)
        await flush_unique(self._session, _UNIQUE_KEYS)
        return product

    async def update(self, product: Product, changes: dict[str, Any]) -> Product:
        for field, value in changes.items():
            setattr(product, field, value)
        product.version += 1
        product.updated_at = utc_now()
        await flush_unique(self._session, _UNIQUE_KEYS)
        return product

    async def delete(self, product: Product) -> None:
        await self._session.delete(product)
        await self._session.flush()


def _filters(query: ProductQuery) -> list[ColumnElement[bool]]:
    filters: list[ColumnElement[bool]] = []
    if query.q:
        filters.append(
            or_(
                Product.name.icontains(query.q, autoescape=True),
                Product.description.icontains(query.q, autoescape=True),
            )
        )
    if query.min_price is not None:
        filters.append(Product.price >= query.min_price)
    if query.max_price is not None:
        filters.append(Product.price <= query.max_price)
    if query.owner_id is not None:
        filters.append(Product.owner_id == query.owner_id)
    return filters
