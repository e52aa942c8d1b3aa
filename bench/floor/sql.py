"""The statements the service sends for each scenario, copied from `python -m bench.capture_sql`.

The floor app runs exactly these, in this order, with BEGIN and COMMIT where
the service has them (asyncpg's `connection.transaction()` sends the same
two). `python -m bench.capture_sql` compares this file with what the
service sends now and says where they differ.
"""

from __future__ import annotations

BEGIN = "BEGIN"
COMMIT = "COMMIT"

_PRODUCT_COLUMNS = (
    "products.id, products.name, products.description, products.price, products.tax, "
    "products.sku, products.owner_id, products.version, products.created_at, products.updated_at"
)
_USER_COLUMNS = (
    "users.id, users.username, users.email, users.full_name, users.password_hash, users.role, "
    "users.is_active, users.token_version, users.created_at, users.updated_at"
)
_SEARCH = "products.search_text LIKE lower($1::VARCHAR) ESCAPE '/'"

PRODUCT_BY_ID = f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE products.id = $1::BIGINT"  # noqa: S608
PRODUCT_BY_ID_FOR_UPDATE = f"{PRODUCT_BY_ID} FOR UPDATE"
# A page: its ids first (one more than the page, to know if another follows),
# then those rows whole. The total: the planner's estimate, then a count of
# at most EXACT_TOTAL_LIMIT + 1 matches (the floor repeats the service's
# choice of which of them to send; see bench/floor/app.py).
PRODUCT_PAGE = (
    f"SELECT {_PRODUCT_COLUMNS} FROM products JOIN (SELECT products.id AS id FROM products "  # noqa: S608
    "ORDER BY products.id ASC LIMIT $1::INTEGER OFFSET $2::INTEGER) AS page "
    "ON products.id = page.id ORDER BY products.id ASC"
)
PRODUCT_ESTIMATE = "EXPLAIN (FORMAT JSON) SELECT 1 FROM products"
PRODUCT_COUNT = (
    "SELECT count(*) AS count_1 FROM (SELECT $1::INTEGER AS anon_2 FROM products "
    "LIMIT $2::INTEGER) AS anon_1"
)
SEARCH_PAGE = (
    f"SELECT {_PRODUCT_COLUMNS} FROM products JOIN (SELECT products.id AS id FROM products "  # noqa: S608
    f"WHERE {_SEARCH} ORDER BY products.id ASC LIMIT $2::INTEGER OFFSET $3::INTEGER) AS page "
    "ON products.id = page.id ORDER BY products.id ASC"
)
SEARCH_ESTIMATE = f"EXPLAIN (FORMAT JSON) SELECT 1 FROM products WHERE {_SEARCH}"  # noqa: S608
SEARCH_COUNT = (
    "SELECT count(*) AS count_1 FROM (SELECT $1::INTEGER AS anon_2 FROM products "
    "WHERE products.search_text LIKE lower($2::VARCHAR) ESCAPE '/' LIMIT $3::INTEGER) AS anon_1"
)
INSERT_PRODUCT = (
    "INSERT INTO products (name, description, price, tax, sku, owner_id, version, created_at, "
    "updated_at) VALUES ($1::VARCHAR, $2::VARCHAR, $3::NUMERIC(12, 2), $4::NUMERIC(12, 2), "
    "$5::VARCHAR, $6::BIGINT, $7::INTEGER, $8::TIMESTAMP WITH TIME ZONE, "
    "$9::TIMESTAMP WITH TIME ZONE) RETURNING products.id, products.search_text"
)
# The service's PATCH sets the fields sent, then version and updated_at; the
# benchmark sends the price alone.
UPDATE_PRODUCT_PRICE = (
    "UPDATE products SET price=$1::NUMERIC(12, 2), version=$2::INTEGER, "
    "updated_at=$3::TIMESTAMP WITH TIME ZONE WHERE products.id = $4::BIGINT"
)

USER_BY_ID = f"SELECT {_USER_COLUMNS} FROM users WHERE users.id = $1::BIGINT"  # noqa: S608
USER_BY_LOGIN = (
    f"SELECT {_USER_COLUMNS} FROM users "  # noqa: S608
    "WHERE lower(users.username) = lower($1::VARCHAR) OR lower(users.email) = lower($1::VARCHAR)"
)
ADVISORY_LOCK = "SELECT pg_advisory_xact_lock($1::BIGINT) AS pg_advisory_xact_lock_1"
RECENT_FAILURES = (
    "SELECT login_failures.failed_at FROM login_failures WHERE login_failures.key = $1::VARCHAR "
    "AND login_failures.failed_at > $2::TIMESTAMP WITH TIME ZONE "
    "ORDER BY login_failures.failed_at DESC LIMIT $3::INTEGER"
)
CLEAR_FAILURES = "DELETE FROM login_failures WHERE login_failures.key = $1::VARCHAR"
INSERT_FAMILY = (
    "INSERT INTO refresh_families (id, user_id, created_at, revoked_at) VALUES ($1::VARCHAR, "
    "$2::BIGINT, $3::TIMESTAMP WITH TIME ZONE, $4::TIMESTAMP WITH TIME ZONE)"
)
INSERT_REFRESH_TOKEN = (
    "INSERT INTO refresh_tokens (jti, family_id, expires_at, created_at, used_at) VALUES "  # noqa: S105
    "($1::VARCHAR, $2::VARCHAR, $3::TIMESTAMP WITH TIME ZONE, $4::TIMESTAMP WITH TIME ZONE, "
    "$5::TIMESTAMP WITH TIME ZONE)"
)

# Per scenario (as bench.capture_sql names them), what reaches PostgreSQL.
SCENARIOS: dict[str, tuple[str, ...]] = {
    "health": (),
    "get_product": (BEGIN, PRODUCT_BY_ID, COMMIT),
    # A first page with more after it, a total under EXACT_TOTAL_LIMIT: estimated, then counted.
    "list_products": (BEGIN, PRODUCT_PAGE, PRODUCT_ESTIMATE, PRODUCT_COUNT, COMMIT),
    "search_products": (BEGIN, SEARCH_PAGE, SEARCH_ESTIMATE, SEARCH_COUNT, COMMIT),
    "users_me": (BEGIN, USER_BY_ID, COMMIT),
    "create_product": (BEGIN, USER_BY_ID, INSERT_PRODUCT, COMMIT),
    "patch_product": (BEGIN, USER_BY_ID, PRODUCT_BY_ID_FOR_UPDATE, UPDATE_PRODUCT_PRICE, COMMIT),
    "login": (
        *(BEGIN, USER_BY_LOGIN, ADVISORY_LOCK, RECENT_FAILURES, CLEAR_FAILURES),
        *(INSERT_FAMILY, INSERT_REFRESH_TOKEN, COMMIT),
    ),
}
