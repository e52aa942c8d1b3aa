from typing import Annotated

from fastapi import APIRouter, Form, Response, status

from app.auth.dependencies import AuthServiceDep
from app.auth.schemas import RefreshRequest, TokenPairRead, TokenRequest
from app.auth.service import TokenPair
from app.core.exceptions import InvalidRequest
from app.core.problems import OAuth2Problem
from app.core.routing import (
    REFRESH_GRANT,
    ApiRoute,
    OAuth2FormRoute,
    check_grant_type,
    missing_fields,
    problem_responses,
)

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
    summary="Sign in, or refresh (OAuth2 password and refresh grants)",
    description="Takes an `application/x-www-form-urlencoded` form (RFC 6749).\n\n"
    "- **Password grant** (`grant_type=password`, or no `grant_type`): `username` (a username "
    "or an email) and `password`. Failed logins are throttled per account: after "
    "`LOGIN_MAX_FAILURES` failures within `LOGIN_WINDOW_SECONDS`, attempts get 429 (even with "
    "the right password) until `Retry-After` seconds have passed.\n"
    "- **Refresh grant** (`grant_type=refresh_token`): `refresh_token`. The same rules as "
    "`POST /api/v1/auth/refresh` (the token is retired; a retired one revokes its whole "
    "login), but a token that is not valid gets 400 `invalid_grant`, as RFC 6749 says.",
    responses={
        200: {"links": _TOKEN_LINKS},
        400: {
            "model": OAuth2Problem,
            "description": "`unsupported_grant_type`: `grant_type` is neither `password` nor "
            "`refresh_token` (checked before anything else). `invalid_request`: a field the "
            "grant needs is missing or malformed. `invalid_grant`: wrong credentials, an "
            "inactive user, or a refresh token that is not valid.",
        },
        **problem_responses(413, 429, 503),
    },
    openapi_extra={
        "requestBody": {
            "content": {
                "application/x-www-form-urlencoded": {
                    "examples": {
                        "password": {
                            "summary": "Sign in",
                            "value": {
                                "grant_type": "password",
                                "username": "alice",
                                "password": "correct horse battery",
                            },
                        },
                        "refresh": {
                            "summary": "Refresh",
                            "value": {
                                "grant_type": "refresh_token",
                                "refresh_token": "eyJhbGciOiJIUzI1NiIsInR5cCI6InJ0K2p3dCJ9...",
                            },
                        },
                    }
                }
            }
        }
    },
)
async def issue_token(
    auth: AuthServiceDep, response: Response, form: Annotated[TokenRequest, Form()]
) -> TokenPairRead:
    check_grant_type(form.grant_type)
    if form.grant_type == REFRESH_GRANT:
        if form.refresh_token is None:
            raise InvalidRequest(missing_fields(["refresh_token"]))
        return _token_response(response, await auth.refresh_grant(form.refresh_token))
    if form.username is None or form.password is None:
        sent = {"username": form.username, "password": form.password}
        raise InvalidRequest(missing_fields([name for name, value in sent.items() if not value]))
    return _token_response(response, await auth.login(form.username, form.password))


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
