"""The project's own exceptions.

Services raise these and know nothing of HTTP; `app.core.problems` is the one
place that turns them into RFC 9457 responses.
"""

from typing import ClassVar


class DomainError(Exception):
    # The request's unit of work normally rolls back when an error escapes it.
    # An error that records something the next request must see (a failed
    # login, a revoked token family) sets this so its changes are committed.
    keeps_changes: ClassVar[bool] = False

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotAuthenticated(DomainError):
    """No credentials, or credentials that are not (or no longer) valid."""


class InvalidAccessToken(NotAuthenticated):
    """A bearer access token was sent and refused: expired, forged, revoked (RFC 6750's
    `error="invalid_token"`)."""


class RefreshTokenReused(NotAuthenticated):
    """A retired refresh token came back: its family has just been revoked."""

    keeps_changes = True


class InvalidToken(DomainError):
    """A one-time token (email verification, password reset) that cannot be used:
    unknown, expired, used or retired. Every case answers alike."""


class PermissionDenied(DomainError):
    pass


class WrongPassword(PermissionDenied):
    """A wrong current password: refused, and counted against the account's throttle."""

    keeps_changes = True  # the failure it counts must outlive the 403


class NotFound(DomainError):
    pass


class Conflict(DomainError):
    pass


class PreconditionFailed(DomainError):
    pass


class IdempotencyKeyReused(DomainError):
    """An idempotency key came back with a different request than the one it first named."""


class RetryLater(DomainError):
    """Not now; the answer says after how many seconds (Retry-After)."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


class RateLimited(RetryLater):
    pass


class Busy(RetryLater):
    """The service is at a limit of its own (a worker's streams), not the client's."""


class OAuth2Error(DomainError):
    """An error of the token endpoint, with its RFC 6749 section 5.2 code."""

    error: ClassVar[str]


class InvalidRequest(OAuth2Error):
    error = "invalid_request"


class InvalidGrant(OAuth2Error):
    error = "invalid_grant"
    keeps_changes = True  # the failure it counts must outlive the 400


class UnsupportedGrantType(OAuth2Error):
    error = "unsupported_grant_type"
