from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status

from app.auth.dependencies import CurrentActor, CurrentUser, SignedIn
from app.core.database import SessionDep
from app.core.dependencies import PasswordHasherDep, SettingsDep
from app.core.params import IdPath, PageParams
from app.core.routing import ApiRoute, problem_responses
from app.mail.dispatcher import dispatch_after_response
from app.users.schemas import (
    PasswordChange,
    UserAdminUpdate,
    UserCreate,
    UserPage,
    UserRead,
    UserUpdate,
)
from app.users.service import UserService

JSON = "application/json"

router = APIRouter(prefix="/users", tags=["users"], route_class=ApiRoute)


async def get_user_service(
    session: SessionDep, hasher: PasswordHasherDep, settings: SettingsDep
) -> UserService:
    return UserService(session, hasher, settings)


UserServiceDep = Annotated[UserService, Depends(get_user_service)]
_SENDS_MAIL = [Depends(dispatch_after_response)]

_SIGNED_IN = (401, 413, 422, 503)
_ADMIN = (401, 403, 413, 422, 503)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Register a new user",
    description="Anyone may register. The new user has the `user` role and an unverified "
    "email (`email_verified: false`). A welcome message with a link that verifies the address "
    "is sent after the response; failing to send it never fails the registration.",
    dependencies=_SENDS_MAIL,
    responses={
        201: {
            "headers": {"Location": {"description": "The new user.", "schema": {"type": "string"}}},
            # OpenAPI links: the admin operations on the user just made.
            "links": {
                name: {"operationId": operation, "parameters": {"user_id": "$response.body#/id"}}
                for name, operation in (
                    ("GetUser", "get_user"),
                    ("UpdateUser", "update_user"),
                    ("DeleteUser", "delete_user"),
                )
            },
        },
        **problem_responses(409, 413, 422, 503, _409="That username or email is already taken."),
    },
)
async def register(
    data: UserCreate, users: UserServiceDep, request: Request, response: Response
) -> UserRead:
    user = await users.register(data)
    response.headers["Location"] = request.app.url_path_for("get_user", user_id=str(user.id))
    return UserRead.model_validate(user)


@router.get(
    "/me",
    summary="Your own account",
    description="The signed-in user, as everyone else's admin sees it.",
    response_model=UserRead,
    responses=problem_responses(401, 503),
)
async def read_me(user: SignedIn) -> Response:
    # The row to JSON in one pass through pydantic-core; response_model only documents it.
    return Response(UserRead.model_validate(user._mapping).model_dump_json(), media_type=JSON)


@router.patch(
    "/me",
    summary="Change your username, email or full name",
    description="A new email address is unverified: links sent to the old one stop working, "
    "and a verification message goes to the new one after the response.",
    dependencies=_SENDS_MAIL,
    responses=problem_responses(*_SIGNED_IN, 409),
)
async def update_me(data: UserUpdate, user: CurrentUser, users: UserServiceDep) -> UserRead:
    return UserRead.model_validate(await users.update(user, data))


@router.post(
    "/me/password",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Change your password",
    description="Needs the current password; wrong ones count against the account's login "
    "throttle. Every access and refresh token issued before the change stops working at once.",
    responses=problem_responses(
        *_SIGNED_IN,
        403,
        429,
        _403="The current password is not correct (the attempt counts against the account).",
        _429="Too many wrong passwords for this account, here or at sign-in; retry after "
        "`Retry-After` seconds.",
    ),
)
async def change_password(data: PasswordChange, user: CurrentUser, users: UserServiceDep) -> None:
    await users.change_password(user, data.current_password, data.new_password)


@router.delete(
    "/me",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete your account and your products",
    description="Final: the account, its products and its sessions go at once (each product "
    "deleted counts as deleted for every reader).",
    responses=problem_responses(401, 503),
)
async def delete_me(user: CurrentUser, users: UserServiceDep) -> None:
    await users.delete(user)


@router.get(
    "",
    summary="List users (admin)",
    description="Every user, ordered by id, a page at a time (`limit`, `offset`).",
    responses=problem_responses(*_ADMIN),
)
async def list_users(actor: CurrentActor, users: UserServiceDep, page: PageParams) -> UserPage:
    items, total = await users.list(actor, limit=page.limit, offset=page.offset)
    return UserPage(
        items=[UserRead.model_validate(u) for u in items],
        total=total,
        limit=page.limit,
        offset=page.offset,
    )


@router.get(
    "/{user_id}",
    summary="Read a user (admin)",
    description="Any user by id. An unknown id gets 404 before a non-admin gets 403.",
    responses=problem_responses(*_ADMIN, 404),
)
async def get_user(user_id: IdPath, actor: CurrentActor, users: UserServiceDep) -> UserRead:
    return UserRead.model_validate(await users.get(actor, user_id))


@router.patch(
    "/{user_id}",
    summary="Change a user, including role and active flag (admin)",
    description="Deactivating a user ends their sessions: their tokens stop working. A new "
    "email address is unverified, and a verification message goes to it.",
    dependencies=_SENDS_MAIL,
    responses=problem_responses(*_ADMIN, 404, 409),
)
async def update_user(
    user_id: IdPath, data: UserAdminUpdate, actor: CurrentActor, users: UserServiceDep
) -> UserRead:
    return UserRead.model_validate(await users.update_by_id(actor, user_id, data))


@router.delete(
    "/{user_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Delete a user and their products (admin)",
    description="Their products and sessions go with them.",
    responses=problem_responses(*_ADMIN, 404),
)
async def delete_user(user_id: IdPath, actor: CurrentActor, users: UserServiceDep) -> None:
    await users.delete_by_id(actor, user_id)
