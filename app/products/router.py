from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status

from app.auth.dependencies import CurrentUser
from app.core.database import SessionDep
from app.core.http import etag, if_match, if_none_match_hits
from app.core.params import IdPath
from app.core.routing import ApiRoute, problem_responses
from app.products.models import Product
from app.products.schemas import ProductCreate, ProductPage, ProductPatch, ProductQuery, ProductRead
from app.products.service import ProductService

router = APIRouter(prefix="/products", tags=["products"], route_class=ApiRoute)


def get_product_service(session: SessionDep) -> ProductService:
    return ProductService(session)


ProductServiceDep = Annotated[ProductService, Depends(get_product_service)]
IfMatch = Annotated[
    str | None,
    Header(
        alias="If-Match",
        description="Apply the change only if the product's current `ETag` is one of these "
        '(`"3"`, or `*`); otherwise 412.',
    ),
]
IfNoneMatch = Annotated[
    str | None, Header(description="Answer 304 if the product's `ETag` is one of these.")
]

_ETAG_HEADER = {
    "ETag": {"description": "The product's version, quoted.", "schema": {"type": "string"}}
}
_CHANGE_ERRORS = (401, 403, 404, 409, 412, 413, 422, 503)


def _with_etag(response: Response, product: Product) -> ProductRead:
    response.headers["ETag"] = etag(product.version)
    return ProductRead.model_validate(product)


@router.get(
    "",
    summary="List products",
    description="Filter, sort and page. The page is ordered stably: ties are broken by id.",
    responses=problem_responses(422, 503),
)
async def list_products(
    query: Annotated[ProductQuery, Query()], products: ProductServiceDep
) -> ProductPage:
    items, total = await products.list(query)
    return ProductPage(
        items=[ProductRead.model_validate(p) for p in items],
        total=total,
        limit=query.limit,
        offset=query.offset,
    )


@router.get(
    "/{product_id}",
    summary="Read a product",
    response_model=ProductRead,
    responses={
        200: {"headers": _ETAG_HEADER},
        304: {
            "description": "`If-None-Match` matched: the client's copy is current.",
            "headers": _ETAG_HEADER,
        },
        **problem_responses(404, 422, 503),
    },
)
async def get_product(
    product_id: IdPath,
    products: ProductServiceDep,
    response: Response,
    if_none_match: IfNoneMatch = None,
) -> ProductRead | Response:
    product = await products.get(product_id)
    if if_none_match_hits(if_none_match, product.version):
        return Response(
            status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag(product.version)}
        )
    return _with_etag(response, product)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Create a product",
    description="The signed-in user becomes its owner.",
    responses={
        201: {
            "headers": {
                **_ETAG_HEADER,
                "Location": {"description": "The new product.", "schema": {"type": "string"}},
            }
        },
        **problem_responses(401, 409, 413, 422, 503, _409="That sku is already taken."),
    },
)
async def create_product(
    data: ProductCreate,
    user: CurrentUser,
    products: ProductServiceDep,
    request: Request,
    response: Response,
) -> ProductRead:
    product = await products.create(user, data)
    response.headers["Location"] = request.app.url_path_for(
        "get_product", product_id=str(product.id)
    )
    return _with_etag(response, product)


@router.put(
    "/{product_id}",
    summary="Replace a product (owner or admin)",
    description="A full replacement: optional fields left out become null.",
    responses={200: {"headers": _ETAG_HEADER}, **problem_responses(*_CHANGE_ERRORS)},
)
async def replace_product(
    product_id: IdPath,
    data: ProductCreate,
    user: CurrentUser,
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
    responses={200: {"headers": _ETAG_HEADER}, **problem_responses(*_CHANGE_ERRORS)},
)
async def patch_product(
    product_id: IdPath,
    data: ProductPatch,
    user: CurrentUser,
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
    responses=problem_responses(401, 403, 404, 412, 422, 503),
)
async def delete_product(
    product_id: IdPath,
    user: CurrentUser,
    products: ProductServiceDep,
    if_match_header: IfMatch = None,
) -> None:
    await products.delete(user, product_id, if_match(if_match_header))
