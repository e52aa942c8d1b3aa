from typing import Annotated

from fastapi import APIRouter, Form, Response, status

from app.auth.dependencies import AuthServiceDep
from app.auth.schemas import RefreshRequest, TokenPairRead
from app.auth.service import TokenPair
from app.core.exceptions import UnsupportedGrantType
from app.core.problems import OAuth2Problem
from app.core.routing import ApiRoute, OAuth2FormRoute, problem_responses
from app.core.schemas import SingleLine

router = APIRouter(prefix="/auth", tags=["auth"], route_class=ApiRoute)
# The token endpoint alone answers a bad form with RFC 6749's 400, not 422.
_token_router = APIRouter(route_class=OAuth2FormRoute)


def _token_response(response: Response, pair: TokenPair) -> TokenPairRead:
    # RFC 6749 section 5.1: token responses must not be cached.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return TokenPairRead(
        access_token=pair.access_token, expires_in=pair.expires_in, refresh_token=pair.refresh_token
    )


# OpenAPI links: a token pair's refresh token can be exchanged or revoked.
_TOKEN_LINKS = {
    name: {
        "operationId": operation,
        "requestBody": {"refresh_token": "$response.body#/refresh_token"},
    }
    for name, operation in (("RefreshTokens", "refresh_tokens"), ("Logout", "logout"))
}


@_token_router.post(
    "/token",
    summary="Sign in (OAuth2 password grant)",
    description="Takes an `application/x-www-form-urlencoded` form. `username` is a username or "
    "an email. Failed logins are throttled per account: after `LOGIN_MAX_FAILURES` failures "
    "within `LOGIN_WINDOW_SECONDS`, attempts get 429 (even with the right password) until "
    "`Retry-After` seconds have passed.",
    responses={
        200: {"links": _TOKEN_LINKS},
        400: {
            "model": OAuth2Problem,
            "description": "`invalid_grant`: wrong credentials or an inactive user. "
            "`invalid_request`: a malformed form. `unsupported_grant_type`: `grant_type` is "
            "not `password`.",
        },
        **problem_responses(413, 429, 503),
    },
)
async def issue_token(
    auth: AuthServiceDep,
    response: Response,
    username: Annotated[
        SingleLine,
        Form(min_length=1, max_length=320, description="Username or email.", examples=["alice"]),
    ],
    password: Annotated[
        SingleLine, Form(min_length=1, max_length=1024, examples=["correct horse battery"])
    ],
    grant_type: Annotated[str | None, Form(description="`password` when sent.")] = None,
    scope: Annotated[str, Form(description="Ignored: there are no scopes.")] = "",
) -> TokenPairRead:
    if grant_type is not None and grant_type != "password":
        raise UnsupportedGrantType("Only the password grant type is supported.")
    return _token_response(response, await auth.login(username, password))


router.include_router(_token_router)


@router.post(
    "/refresh",
    summary="Exchange a refresh token for a new pair",
    description="The refresh token presented is retired. Presenting a retired one again revokes "
    "every refresh token of that login.",
    responses={200: {"links": _TOKEN_LINKS}, **problem_responses(401, 413, 422, 503)},
)
async def refresh_tokens(
    body: RefreshRequest, auth: AuthServiceDep, response: Response
) -> TokenPairRead:
    return _token_response(response, await auth.refresh(body.refresh_token))


@router.post(
    "/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke a login",
    description="Revokes every refresh token of the login the token belongs to. Answers 204 "
    "even if it was already revoked or has expired; 401 only for a token this service did not "
    "issue as a refresh token.",
    responses=problem_responses(401, 413, 422, 503),
)
async def logout(body: RefreshRequest, auth: AuthServiceDep) -> None:
    await auth.logout(body.refresh_token)
