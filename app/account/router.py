"""Email verification and password reset (API.md, contract 1.1)."""

from typing import Annotated

from fastapi import APIRouter, Depends, status

from app.account.schemas import (
    Accepted,
    EmailVerification,
    PasswordResetConfirmation,
    PasswordResetRequest,
)
from app.account.service import AccountService
from app.auth.dependencies import CurrentUser
from app.core.database import SessionDep
from app.core.dependencies import PasswordHasherDep, SettingsDep
from app.core.routing import ApiRoute, problem_responses
from app.mail.dispatcher import dispatch_after_response

router = APIRouter(route_class=ApiRoute)

RESET_ACCEPTED = (
    "If an active account has this address, a message with a link to reset its password "
    "is on its way."
)
VERIFICATION_ACCEPTED = "A message with a link to verify your email address is on its way."
_SENDS_MAIL = [Depends(dispatch_after_response)]


async def get_account_service(
    session: SessionDep, settings: SettingsDep, hasher: PasswordHasherDep
) -> AccountService:
    return AccountService(session, settings, hasher)


AccountServiceDep = Annotated[AccountService, Depends(get_account_service)]


@router.post(
    "/auth/verify-email",
    tags=["auth"],
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Verify an email address with the token from its message",
    description="The token comes from the link in the welcome or verification message, "
    "sent to the address it verifies. It works once, for `EMAIL_VERIFICATION_EXPIRE_HOURS` "
    "(48), and only while the account still has that address.",
    responses=problem_responses(400, 413, 422, 503),
)
async def verify_email(body: EmailVerification, account: AccountServiceDep) -> None:
    await account.verify_email(body.token)


@router.post(
    "/users/me/verification",
    tags=["users"],
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send a new verification message",
    description="A message with a new verification link goes to your address, after the "
    "response. Links sent earlier keep working until they expire. At most "
    "`EMAIL_VERIFICATION_MAX_PER_HOUR` (5) an hour.",
    dependencies=_SENDS_MAIL,
    responses=problem_responses(
        401,
        409,
        429,
        503,
        _409="Your email address is already verified.",
        _429="Too many verification messages in the last hour; retry after `Retry-After` seconds.",
    ),
)
async def request_verification(user: CurrentUser, account: AccountServiceDep) -> Accepted:
    await account.request_verification(user)
    return Accepted(detail=VERIFICATION_ACCEPTED)


@router.post(
    "/auth/password-reset",
    tags=["auth"],
    status_code=status.HTTP_202_ACCEPTED,
    summary="Ask for a password reset link",
    description="Answers 202 with the same body, in about the same time, for every address: "
    "whether an account has it is never told. Only an active user's address is sent a "
    "message, with a link that works once, for `PASSWORD_RESET_EXPIRE_MINUTES` (30); asking "
    "again retires the earlier links. Beyond `PASSWORD_RESET_MAX_PER_HOUR` (3) requests for "
    "one address in an hour, requests change nothing (still 202).",
    dependencies=_SENDS_MAIL,
    responses=problem_responses(413, 422, 503),
)
async def request_password_reset(
    body: PasswordResetRequest, account: AccountServiceDep
) -> Accepted:
    await account.request_password_reset(body.email)
    return Accepted(detail=RESET_ACCEPTED)


@router.post(
    "/auth/password-reset/confirm",
    tags=["auth"],
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Set a new password with the token from a reset message",
    description="The new password follows the registration rules. As a password change "
    "does, it ends every session: access and refresh tokens issued before stop working. It "
    "also verifies the address (the link reached it) and clears the account's failed "
    "logins.",
    responses=problem_responses(400, 413, 422, 503),
)
async def confirm_password_reset(
    body: PasswordResetConfirmation, account: AccountServiceDep
) -> None:
    await account.confirm_password_reset(body.token, body.new_password)
