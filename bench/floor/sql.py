"""The statements the service sends for each scenario, copied from `python -m bench.capture_sql`,
and the bare ones a hand-written app would send for the same reads.

SCENARIOS: the floor app runs exactly these, in this order,
with BEGIN and COMMIT where the service has them (asyncpg's
`connection.transaction()` sends the same two). `python -m bench.capture_sql`
compares them with what the service sends now and says where they differ.

BARE: the floor app on its bare address: each read one statement, outside
any transaction, its total counted in the same statement (up to
EXACT_TOTAL_LIMIT + 1), with no estimate. Scenarios missing there send the
same as SCENARIOS. The difference between the two floors is what the
service's SQL costs; between the service and the same-SQL floor, what the
framework costs.
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
    "users.is_active, users.email_verified, users.token_version, users.created_at, "
    "users.updated_at"
)
_SEARCH = "products.search_text LIKE lower($1::VARCHAR) ESCAPE '/'"

PRODUCT_BY_ID = f"SELECT {_PRODUCT_COLUMNS} FROM products WHERE products.id = $1::BIGINT"  # noqa: S608
PRODUCT_BY_ID_FOR_UPDATE = f"{PRODUCT_BY_ID} FOR UPDATE"
# The list without filters: the page's ids (one more than the page, to know
# if another follows), those rows whole, and the parts of the total (counted:
# at most EXACT_TOTAL_LIMIT + 1; estimated: the table's size) in one
# statement. Its parameters: limit + 1, offset, limit, EXACT_TOTAL_LIMIT,
# EXACT_TOTAL_LIMIT + 1.
PRODUCT_PAGE_WITH_TOTAL = (
    "WITH page_ids AS (SELECT products.id AS id FROM products ORDER BY products.id ASC LIMIT "
    "$1::INTEGER OFFSET $2::INTEGER) SELECT totals.counted, totals.estimated, page_rows.id, "
    "page_rows.name, page_rows.description, page_rows.price, page_rows.tax, page_rows.sku, "
    "page_rows.owner_id, page_rows.version, page_rows.created_at, page_rows.updated_at FROM "
    "(SELECT CASE WHEN ((SELECT count(*) AS count_1 FROM page_ids) <= $3::INTEGER) THEN NULL "
    "ELSE (SELECT CASE WHEN c.reltuples < 0 OR c.relpages = 0 THEN NULL ELSE (c.reltuples / "
    "c.relpages * (pg_relation_size(c.oid) / current_setting('block_size')::float8))::bigint "
    "END FROM pg_class c WHERE c.oid = 'products'::regclass) END AS estimated, CASE WHEN "
    "((SELECT count(*) AS count_1 FROM page_ids) <= $3::INTEGER) THEN NULL WHEN "
    "(coalesce((SELECT CASE WHEN c.reltuples < 0 OR c.relpages = 0 THEN NULL ELSE "
    "(c.reltuples / c.relpages * (pg_relation_size(c.oid) / "
    "current_setting('block_size')::float8))::bigint END FROM pg_class c WHERE c.oid = "
    "'products'::regclass), 0) <= $4::BIGINT) THEN (SELECT count(*) AS count_2 FROM (SELECT 1 "
    "FROM products LIMIT $5::INTEGER) AS matches) END AS counted) AS totals LEFT OUTER JOIN "
    "(SELECT products.id AS id, products.name AS name, products.description AS description, "
    "products.price AS price, products.tax AS tax, products.sku AS sku, products.owner_id AS "
    "owner_id, products.version AS version, products.created_at AS created_at, "
    "products.updated_at AS updated_at FROM products JOIN page_ids ON products.id = "
    "page_ids.id) AS page_rows ON true ORDER BY page_rows.id ASC"
)
# A filtered list: the page, then the planner's estimate, then a count of at
# most EXACT_TOTAL_LIMIT + 1 matches when the estimate is under it.
SEARCH_PAGE = (
    "WITH page_ids AS (SELECT products.id AS id FROM products WHERE products.search_text LIKE "
    "lower($1::VARCHAR) ESCAPE '/' ORDER BY products.id ASC LIMIT $2::INTEGER OFFSET "
    "$3::INTEGER) SELECT page_rows.id, page_rows.name, page_rows.description, "
    "page_rows.price, page_rows.tax, page_rows.sku, page_rows.owner_id, page_rows.version, "
    "page_rows.created_at, page_rows.updated_at FROM (SELECT products.id AS id, products.name "
    "AS name, products.description AS description, products.price AS price, products.tax AS "
    "tax, products.sku AS sku, products.owner_id AS owner_id, products.version AS version, "
    "products.created_at AS created_at, products.updated_at AS updated_at FROM products JOIN "
    "page_ids ON products.id = page_ids.id) AS page_rows ORDER BY page_rows.id ASC"
)
SEARCH_ESTIMATE = f"EXPLAIN (FORMAT JSON) SELECT 1 FROM products WHERE {_SEARCH}"  # noqa: S608
SEARCH_COUNT = (
    "SELECT count(*) AS count_1 FROM (SELECT 1 FROM products WHERE products.search_text LIKE "
    "lower($1::VARCHAR) ESCAPE '/' LIMIT $2::INTEGER) AS matches"
)
INSERT_PRODUCT = (
    "INSERT INTO products (name, description, price, tax, sku, owner_id, version, created_at, "
    "updated_at) VALUES ($1::VARCHAR, $2::VARCHAR, $3::NUMERIC(12, 2), $4::NUMERIC(12, 2), "
    "$5::VARCHAR, $6::BIGINT, $7::INTEGER, $8::TIMESTAMP WITH TIME ZONE, "
    "$9::TIMESTAMP WITH TIME ZONE) RETURNING products.id, products.search_text"
)
# Every change writes its event in the change's transaction (live events).
INSERT_EVENT = (
    "INSERT INTO product_events (position, kind, product_id, owner_id, version, data, "
    "created_at, published_at) VALUES ($1::BIGINT, $2, $3::BIGINT, $4::BIGINT, $5::INTEGER, "
    "$6::VARCHAR, $7::TIMESTAMP WITH TIME ZONE, $8::TIMESTAMP WITH TIME ZONE) "
    "RETURNING product_events.id"
)
# The service's PATCH sets the fields sent, then version and updated_at; the
# benchmark sends the price alone.
UPDATE_PRODUCT_PRICE = (
    "UPDATE products SET price=$1::NUMERIC(12, 2), version=$2::INTEGER, "
    "updated_at=$3::TIMESTAMP WITH TIME ZONE WHERE products.id = $4::BIGINT"
)

USER_BY_ID = f"SELECT {_USER_COLUMNS} FROM users WHERE users.id = $1::BIGINT"  # noqa: S608
# The signed-in user of a read-only request: no password hash, no transaction.
USER_SIGNED_IN = USER_BY_ID.replace("users.password_hash, ", "")
# Who asks for a change (the service's CurrentActor): only what its rules need.
USER_ACTOR = (
    "SELECT users.id, users.role, users.is_active, users.token_version "
    "FROM users WHERE users.id = $1::BIGINT"
)
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
    "get_product": (PRODUCT_BY_ID,),
    # A first page with more after it, a total under EXACT_TOTAL_LIMIT: counted.
    "list_products": (PRODUCT_PAGE_WITH_TOTAL,),
    "search_products": (SEARCH_PAGE, SEARCH_ESTIMATE, SEARCH_COUNT),
    "users_me": (USER_SIGNED_IN,),
    "create_product": (BEGIN, USER_ACTOR, INSERT_PRODUCT, INSERT_EVENT, COMMIT),
    "patch_product": (
        *(BEGIN, USER_ACTOR, PRODUCT_BY_ID_FOR_UPDATE, UPDATE_PRODUCT_PRICE),
        *(INSERT_EVENT, COMMIT),
    ),
    "login": (
        *(BEGIN, USER_BY_LOGIN, ADVISORY_LOCK, RECENT_FAILURES, CLEAR_FAILURES),
        *(INSERT_FAMILY, INSERT_REFRESH_TOKEN, COMMIT),
    ),
}

# The bare floor's reads: a page and its capped count in one statement.
_BARE_PAGE = (
    f"SELECT {_PRODUCT_COLUMNS}, (SELECT count(*) FROM (SELECT 1 FROM products {{where}}"  # noqa: S608
    "LIMIT {cap}) AS matches) AS total FROM products {where}ORDER BY products.id "
    "LIMIT {limit} OFFSET {offset}"
)
BARE_PRODUCT_PAGE = _BARE_PAGE.format(where="", cap="$3", limit="$1", offset="$2")
BARE_SEARCH_PAGE = _BARE_PAGE.format(where=f"WHERE {_SEARCH} ", cap="$4", limit="$2", offset="$3")
BARE: dict[str, tuple[str, ...]] = {
    "list_products": (BARE_PRODUCT_PAGE,),
    "search_products": (BARE_SEARCH_PAGE,),
}
