from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status

from app.auth.dependencies import CurrentActor
from app.core.database import Database, SessionDep, get_database
from app.core.dependencies import SettingsDep
from app.core.http import (
    ENTITY_TAG_LIST,
    REVALIDATE,
    content_tag,
    etag,
    if_match,
    if_none_match_hits,
)
from app.core.params import IdPath
from app.core.routing import ApiRoute, problem_responses
from app.idempotency.service import IdempotencyService, Outcome, StoredResponse, fingerprint
from app.products.models import Product
from app.products.schemas import ProductCreate, ProductPage, ProductPatch, ProductQuery, ProductRead
from app.products.service import ProductReads, ProductService

router = APIRouter(prefix="/products", tags=["products"], route_class=ApiRoute)


async def get_product_service(session: SessionDep) -> ProductService:
    return ProductService(session)


async def get_idempotency_service(session: SessionDep) -> IdempotencyService:
    return IdempotencyService(session)


async def get_product_reads(
    request: Request,
    database: Annotated[Database, Depends(get_database)],
    settings: SettingsDep,
) -> ProductReads:
    # Whatever the header holds: a request with credentials never reads a replica.
    anonymous = "authorization" not in request.headers
    return ProductReads(database, settings.exact_total_limit, replica_allowed=anonymous)


ProductServiceDep = Annotated[ProductService, Depends(get_product_service)]
ProductReadsDep = Annotated[ProductReads, Depends(get_product_reads)]
IdempotencyServiceDep = Annotated[IdempotencyService, Depends(get_idempotency_service)]
IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        description="Apply the change only if the product's current `ETag` is one of these "
        '(`"3"`, or `*`); otherwise 412. A malformed value matches nothing: 412 too.',
        # RFC 9110's grammar, documented rather than enforced: a value outside
        # it is a failed precondition (412), not a validation error.
        json_schema_extra={"pattern": ENTITY_TAG_LIST},
    ),
]
IfNoneMatch = Annotated[
    str | None,
    Header(
        alias="If-None-Match",
        description="Answer 304 if the current `ETag` is one of these (or `*`).",
    ),
]

IdempotencyKeyHeader = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7E]+$",
        description="Makes the create safe to retry: 1 to 255 visible ASCII characters of the "
        "client's choosing (a UUID will do), kept per user for 24 hours. A retry with the same "
        "key and the same body creates nothing and gets the first response again (same status, "
        "body, `Location` and `ETag`, plus `Idempotent-Replayed: true`); the same key with a "
        "different body gets 422, and a retry while the first request is still running gets "
        "409. A failed request keeps nothing, so its retry runs again.",
    ),
]
_CREATE_OPERATION = "POST /api/v1/products"

# OpenAPI links: what a client (or Schemathesis' stateful phase) can do next
# with what a response returned.
_ID_FROM_BODY = {"product_id": "$response.body#/id"}
_SAME_ID = {"product_id": "$request.path.product_id"}


def _next_steps(product_id: dict[str, str]) -> dict[str, Any]:
    conditional = {**product_id, "header.If-Match": "$response.header.ETag"}
    return {
        "GetProduct": {"operationId": "get_product", "parameters": product_id},
        "ReplaceProduct": {"operationId": "replace_product", "parameters": conditional},
        "PatchProduct": {"operationId": "patch_product", "parameters": conditional},
        "DeleteProduct": {"operationId": "delete_product", "parameters": conditional},
    }


_ETAG_HEADER = {
    "ETag": {"description": "The product's version, quoted.", "schema": {"type": "string"}}
}
_REVALIDATE_HEADER = {
    "Cache-Control": {
        "description": "`no-cache`: a cache may keep the response but must revalidate it "
        "(`If-None-Match`) before each use; `no-store` when the request carried credentials.",
        "schema": {"type": "string"},
    }
}
_PAGE_ETAG_HEADER = {
    "ETag": {
        "description": "A validator of this page: it changes whenever the page's products or "
        "`total` do, and is the same from every server.",
        "schema": {"type": "string"},
    }
}
_CHANGE_ERRORS = (401, 403, 404, 409, 412, 413, 422, 503)


def _with_etag(response: Response, product: Product) -> ProductRead:
    response.headers["ETag"] = etag(product.version)
    return ProductRead.model_validate(product)


def _location(request: Request, product: Product) -> str:
    return str(request.app.url_path_for("get_product", product_id=str(product.id)))


def _stored_response_of(outcome: Outcome) -> Response:
    stored = outcome.response
    headers = {"Location": stored.location, "ETag": stored.etag}
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    return Response(
        stored.body,
        stored.status_code,
        headers={name: value for name, value in headers.items() if value is not None},
        media_type="application/json",
    )


_NEXT_PAGE_HEADER = {
    "Link": {
        "description": '`<url>; rel="next"` (RFC 8288) while more products follow: this '
        "query with `offset` dropped and the `cursor` of the next page added. Absent on the "
        "last page.",
        "schema": {"type": "string"},
    }
}


@router.get(
    "",
    summary="List products",
    description="Filter, sort and page. The page is ordered stably: ties are broken by id. "
    "Page with `offset`, or, deep into a long list, with `cursor`: a page that has a next "
    'one links to it in its `Link` header (`rel="next"`), by cursor, which costs the '
    "same however deep the page is.",
    response_model=ProductPage,
    responses={
        200: {"headers": {**_NEXT_PAGE_HEADER, **_PAGE_ETAG_HEADER, **_REVALIDATE_HEADER}},
        304: {
            "description": "`If-None-Match` matched: the client's copy of this page is current.",
            "headers": {**_PAGE_ETAG_HEADER, **_REVALIDATE_HEADER},
        },
        **problem_responses(422, 503),
    },
)
async def list_products(
    request: Request,
    query: Annotated[ProductQuery, Query()],
    products: ProductReadsDep,
    if_none_match: IfNoneMatch = None,
) -> Response:
    found = await products.list(query)
    # Rows to JSON in one pass through pydantic-core: validated once and
    # serialized here, once (the validator is made from the bytes), with no
    # second pass through response_model, which only documents the body.
    page = ProductPage.model_validate(
        {
            "items": [row._mapping for row in found.items],
            "total": found.total,
            "limit": query.limit,
            "offset": query.offset,
        }
    )
    body = page.model_dump_json().encode()
    tag = content_tag(body)
    headers = {"ETag": f'"{tag}"', "Cache-Control": REVALIDATE}
    if if_none_match_hits(if_none_match, tag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    if found.next_cursor is not None:
        following = request.url.remove_query_params("offset").include_query_params(
            cursor=found.next_cursor.encode()
        )
        headers["Link"] = f'<{following.path}?{following.query}>; rel="next"'
    return Response(body, headers=headers, media_type="application/json")


@router.get(
    "/{product_id}",
    summary="Read a product",
    description="Anyone may read. The `ETag` is the product's version; send it back in "
    "`If-None-Match` to get 304 while it is current, or in `If-Match` to change it safely.",
    response_model=ProductRead,
    responses={
        200: {"headers": {**_ETAG_HEADER, **_REVALIDATE_HEADER}, "links": _next_steps(_SAME_ID)},
        304: {
            "description": "`If-None-Match` matched: the client's copy is current.",
            "headers": {**_ETAG_HEADER, **_REVALIDATE_HEADER},
        },
        **problem_responses(404, 422, 503),
    },
)
async def get_product(
    product_id: IdPath,
    products: ProductReadsDep,
    if_none_match: IfNoneMatch = None,
) -> Response:
    row = await products.get(product_id)
    headers = {"ETag": etag(row.version), "Cache-Control": REVALIDATE}
    if if_none_match_hits(if_none_match, str(row.version)):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    # The row to JSON in one pass, as the list does.
    body = ProductRead.model_validate(row._mapping).model_dump_json()
    return Response(body, headers=headers, media_type="application/json")


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a product",
    description="The signed-in user becomes its owner. With an `Idempotency-Key`, retrying "
    "the same request is safe: it creates the product at most once.",
    response_model=ProductRead,
    responses={
        201: {
            "headers": {
                **_ETAG_HEADER,
                "Location": {"description": "The new product.", "schema": {"type": "string"}},
                "Idempotent-Replayed": {
                    "description": "`true` when this is the stored response to an earlier "
                    "request with the same `Idempotency-Key`; absent otherwise.",
                    "schema": {"type": "string", "enum": ["true"]},
                },
            },
            "links": _next_steps(_ID_FROM_BODY),
        },
        **problem_responses(
            401,
            409,
            413,
            422,
            503,
            _409="That sku is already taken, or a request with the same `Idempotency-Key` "
            "is still being processed (retry it later).",
            _422="The request is not valid, or its `Idempotency-Key` was already used with a "
            "different body; `errors` says where and why.",
        ),
    },
)
async def create_product(
    data: ProductCreate,
    user: CurrentActor,
    products: ProductServiceDep,
    idempotency: IdempotencyServiceDep,
    request: Request,
    response: Response,
    idempotency_key: IdempotencyKeyHeader = None,
) -> ProductRead | Response:
    if idempotency_key is None:
        product = await products.create(user, data)
        response.headers["Location"] = _location(request, product)
        return _with_etag(response, product)

    async def create() -> StoredResponse:
        product = await products.create(user, data)
        return StoredResponse(
            status_code=status.HTTP_201_CREATED,
            # Rendered here, once: the replay sends these very bytes again.
            body=ProductRead.model_validate(product).model_dump_json(),
            location=_location(request, product),
            etag=etag(product.version),
        )

    outcome = await idempotency.run(
        user.id, idempotency_key, fingerprint(_CREATE_OPERATION, data), create
    )
    return _stored_response_of(outcome)


@router.put(
    "/{product_id}",
    summary="Replace a product (owner or admin)",
    description="A full replacement: optional fields left out become null.",
    responses={
        200: {"headers": _ETAG_HEADER, "links": _next_steps(_SAME_ID)},
        **problem_responses(*_CHANGE_ERRORS),
    },
)
async def replace_product(
    product_id: IdPath,
    data: ProductCreate,
    user: CurrentActor,
    products: ProductServiceDep,
    response: Response,
    if_match_header: IfMatch = None,
) -> ProductRead:
    product = await products.replace(user, product_id, data, if_match(if_match_header))
    return _with_etag(response, product)


@router.patch(
    "/{product_id}",
    summary="Change some fields of a product (owner or admin)",
    description="Only the fields sent change. An empty object changes nothing and keeps "
    "the version.",
    responses={
        200: {"headers": _ETAG_HEADER, "links": _next_steps(_SAME_ID)},
        **problem_responses(*_CHANGE_ERRORS),
    },
)
async def patch_product(
    product_id: IdPath,
    data: ProductPatch,
    user: CurrentActor,
    products: ProductServiceDep,
    response: Response,
    if_match_header: IfMatch = None,
) -> ProductRead:
    product = await products.patch(user, product_id, data, if_match(if_match_header))
    return _with_etag(response, product)


@router.delete(
    "/{product_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a product (owner or admin)",
    description="With `If-Match`, only if the product is still at that version (else 412).",
    responses=problem_responses(401, 403, 404, 412, 422, 503),
)
async def delete_product(
    product_id: IdPath,
    user: CurrentActor,
    products: ProductServiceDep,
    if_match_header: IfMatch = None,
) -> None:
    await products.delete(user, product_id, if_match(if_match_header))
