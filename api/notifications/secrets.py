"""Webhook secrets at rest: sealed with WEBHOOK_SECRETS_KEY when it is set, else as given.

With a key, the ``webhooks`` table holds ``fernet:`` + a Fernet token (AES-128-CBC with an
HMAC-SHA256, from the ``cryptography`` package the JWT library already needs): a database dump
alone does not reveal the secrets. Several comma-separated keys rotate: the first seals, any of
them unseals. Without a key the secret is stored as given (the README says so).
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from api.settings import Settings

PREFIX = "fernet:"


class SecretUnreadable(Exception):
    """Sealed with a key this process does not have."""


def _keys(settings: Settings) -> MultiFernet | None:
    raw = settings.webhook_secrets_key.get_secret_value()
    keys = [k.strip() for k in raw.split(",") if k.strip()]
    return MultiFernet([Fernet(k) for k in keys]) if keys else None


def check_keys(raw: str) -> None:
    """ValueError unless ``raw`` is empty or comma-separated Fernet keys."""
    for key in (k.strip() for k in raw.split(",") if k.strip()):
        try:
            Fernet(key)
        except ValueError:
            raise ValueError(
                "WEBHOOK_SECRETS_KEY must be Fernet keys (32 url-safe base64 bytes), "
                "comma-separated"
            ) from None


def seal(secret: str, settings: Settings) -> str:
    keys = _keys(settings)
    return secret if keys is None else PREFIX + keys.encrypt(secret.encode()).decode()


def unseal(stored: str, settings: Settings) -> str:
    if not stored.startswith(PREFIX):
        return stored
    keys = _keys(settings)
    if keys is None:
        raise SecretUnreadable("sealed, and WEBHOOK_SECRETS_KEY is not set")
    try:
        return keys.decrypt(stored.removeprefix(PREFIX).encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("sealed with a key not in WEBHOOK_SECRETS_KEY") from None
