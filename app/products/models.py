from decimal import Decimal

from sqlalchemy import ForeignKey, Index, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from app.core.models import Base, BigIntId, TimestampMixin

Amount = Numeric(12, 2)


class Product(TimestampMixin, Base):
    __tablename__ = "products"
    __table_args__ = (
        Index("uq_products_sku", "sku", unique=True),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str | None] = mapped_column(String(5000))
    price: Mapped[Decimal] = mapped_column(Amount)
    tax: Mapped[Decimal | None] = mapped_column(Amount)
    sku: Mapped[str | None] = mapped_column(String(64))
    owner_id: Mapped[int] = mapped_column(
        BigIntId, ForeignKey("users.id", ondelete="CASCADE"), index=True
    )
    version: Mapped[int] = mapped_column(default=1)
