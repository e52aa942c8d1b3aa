from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.core.database import Database, DuplicateValue
from app.core.exceptions import Conflict, NotFound, PermissionDenied, PreconditionFailed
from app.core.versioning import VersionMatch
from app.events.models import EventKind
from app.events.repository import EventLog
from app.products.models import Product
from app.products.repository import ProductReader, ProductRepository, ProductRow, ProductSlice
from app.products.schemas import ProductCreate, ProductPatch, ProductQuery
from app.users.models import Actor


class ProductReads:
    """Product reads, each outside any transaction (Database.read): on the read
    replica when `replica_allowed` (anonymous requests: no read-your-writes
    to keep) and it is healthy, else on the primary."""

    def __init__(self, database: Database, exact_total_limit: int, replica_allowed: bool) -> None:
        self._database = database
        self._exact_total_limit = exact_total_limit
        self._replica_allowed = replica_allowed

    async def get(self, product_id: int) -> ProductRow:
        async def read(connection: AsyncConnection) -> ProductRow:
            row = await ProductReader(connection).get(product_id)
            if row is None:
                raise _missing(product_id)
            return row

        return await self._database.read(read, replica_allowed=self._replica_allowed)

    async def list(self, query: ProductQuery) -> ProductSlice:
        return await self._database.read(
            lambda connection: ProductReader(connection).list(query, self._exact_total_limit),
            replica_allowed=self._replica_allowed,
        )


class ProductService:
    """Product changes, in the request's unit of work."""

    def __init__(self, session: AsyncSession) -> None:
        self._products = ProductRepository(session)
        # Every committed change is an event (live events): written here, in
        # the change's own transaction, so a rollback takes it back too.
        self._events = EventLog(session)

    async def create(self, owner: Actor, data: ProductCreate) -> Product:
        product = Product(**data.model_dump(), owner_id=owner.id)
        try:
            await self._products.add(product)
        except DuplicateValue as duplicate:
            raise _sku_taken() from duplicate
        self._events.product_changed(EventKind.CREATED, product)
        return product

    async def replace(
        self, actor: Actor, product_id: int, data: ProductCreate, expected: VersionMatch | None
    ) -> Product:
        product = await self._get_for_change(actor, product_id, expected)
        return await self._apply(product, data.model_dump())

    async def patch(
        self, actor: Actor, product_id: int, data: ProductPatch, expected: VersionMatch | None
    ) -> Product:
        product = await self._get_for_change(actor, product_id, expected)
        changes = data.model_dump(exclude_unset=True)
        if not changes:
            return product  # nothing to change, so no new version
        return await self._apply(product, changes)

    async def delete(self, actor: Actor, product_id: int, expected: VersionMatch | None) -> None:
        product = await self._get_for_change(actor, product_id, expected)
        self._events.products_deleted([(product.id, product.owner_id, product.version)])
        await self._products.delete(product)

    async def _get_for_change(
        self, actor: Actor, product_id: int, expected: VersionMatch | None
    ) -> Product:
        """The product, locked, once the rules for changing it hold.

        They are checked in the contract's order: existence (404), then
        permission (owner or admin, 403), then the client's precondition (412).
        """
        product = await self._products.get_for_update(product_id)
        if product is None:
            raise _missing(product_id)
        if product.owner_id != actor.id and not actor.is_admin:
            raise PermissionDenied("Only the product's owner or an admin may change it.")
        if expected is not None and not expected.accepts(product.version):
            raise PreconditionFailed(
                f"If-Match does not match the current version ({product.version})."
            )
        return product

    async def _apply(self, product: Product, changes: dict[str, object]) -> Product:
        try:
            await self._products.update(product, changes)
        except DuplicateValue as duplicate:
            raise _sku_taken() from duplicate
        self._events.product_changed(EventKind.UPDATED, product)
        return product


def _missing(product_id: int) -> NotFound:
    return NotFound(f"Product {product_id} does not exist.")


def _sku_taken() -> Conflict:
    return Conflict("That sku is already taken by another product.")
