"""Runtime settings, from the environment (SPEC section 6), validated at start-up."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from redis_seed.keys import DEFAULT_PREFIX, Keys
from redis_seed.urls import check_redis_url
from routing.numbers import all_digits


class SettingsError(ValueError):
    """A setting is missing or malformed; the message says which and what to do."""


def _setting(env: Mapping[str, str], name: str, default: str) -> str:
    """An empty variable counts as unset (``REDIS_URL=`` from a compose file or a unit's
    ``Environment=`` line), as in ``lab up``: the default applies."""
    return env.get(name) or default


def _routes_cache(env: Mapping[str, str]) -> str:
    """ROUTES_CACHE, a file in a directory that exists (the service writes it there)."""
    path = env.get("ROUTES_CACHE", "")
    if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
        raise SettingsError(f"ROUTES_CACHE={path!r}: its directory does not exist (create "
                            "it, writable by the service's user, or leave ROUTES_CACHE unset)")
    if path and os.path.isdir(path):
        raise SettingsError(f"ROUTES_CACHE={path!r} is a directory: name a file in it, "
                            "e.g. routes-ari.cache")
    return path


def parse_listen(value: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPV6]:PORT``."""
    host, sep, port = value.rpartition(":")
    if host.startswith("["):
        # brackets around the whole host, or none: '[::1:4573' was taken as ::1
        bracketed = host.endswith("]") and host.count("[") == host.count("]") == 1
        host = host[1:-1] if bracketed else ""
    elif "]" in host:
        host = ""
    if not sep or not host or not all_digits(port):
        raise SettingsError(f"AGI_LISTEN={value!r}: expected HOST:PORT, e.g. 127.0.0.1:4573 "
                            "or [::1]:4573")
    if not 0 < int(port) < 65536:
        raise SettingsError(f"AGI_LISTEN={value!r}: the port must be 1 to 65535")
    return host, int(port)


def _check_ari_url(url: str) -> None:
    """``http(s)://HOST[:PORT][/path]``, as the ARI client reads it, with no credentials: the
    client would drop them without a word and ask for ARI_USERNAME and ARI_PASSWORD."""
    if "@" in url:
        # Not echoed: a password with a '/', '?' or '#' in it is not where urlsplit looks.
        raise SettingsError(
            "ARI_URL: a user name or password does not go in the URL ('@' found): set "
            "ARI_USERNAME and ARI_PASSWORD, and ARI_URL=http://HOST:PORT")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (parsing it is the check: "abc", 99999 raise ValueError)
    except ValueError:
        ok = False
    else:
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    if not ok:
        raise SettingsError(f"ARI_URL={url!r}: expected http://HOST:PORT or https://..., "
                            "e.g. http://127.0.0.1:8088")


DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEFAULT_REDIS_PREFIX = DEFAULT_PREFIX  # redis_seed.keys: where every key name lives
DEFAULT_ARI_URL = "http://127.0.0.1:8088"
DEFAULT_ARI_APP = "outbound-router"
DEFAULT_AGI_LISTEN = "127.0.0.1:4573"


@dataclass(frozen=True, slots=True)
class Settings:
    redis_url: str = field(default=DEFAULT_REDIS_URL, repr=False)  # may hold a password
    redis_prefix: str = DEFAULT_REDIS_PREFIX
    ari_url: str = DEFAULT_ARI_URL
    ari_username: str = ""
    ari_password: str = field(default="", repr=False)
    ari_app: str = DEFAULT_ARI_APP
    agi_host: str = "127.0.0.1"
    agi_port: int = 4573
    agi_allow: tuple[str, ...] = ()
    #: ROUTES_CACHE: a file where the service keeps the last routing version it loaded, to
    #: route with when it starts while Redis has none for it ("" : none; redis_seed/cache.py)
    routes_cache: str = ""

    @classmethod
    def redis_from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """REDIS_URL and REDIS_PREFIX, checked; the rest left at its defaults (``seed``,
        ``versions``... talk to Redis only: a bad AGI_LISTEN must not stop them)."""
        env = os.environ if env is None else env
        redis_url = _setting(env, "REDIS_URL", DEFAULT_REDIS_URL)
        try:
            check_redis_url(redis_url)
        except ValueError as exc:
            raise SettingsError(f"REDIS_URL: {exc}") from None
        redis_prefix = _setting(env, "REDIS_PREFIX", DEFAULT_REDIS_PREFIX)
        try:
            Keys(redis_prefix)
        except ValueError as exc:
            raise SettingsError(f"REDIS_PREFIX: {exc}") from None
        return cls(redis_url=redis_url, redis_prefix=redis_prefix)

    @classmethod
    def for_ari(cls, env: Mapping[str, str] | None = None) -> Settings:
        """What the ``ari`` service reads (REDIS_*, ARI_*), checked; AGI_* is not its
        business: a typo there, in an environment file both services share, must not stop
        it."""
        env = os.environ if env is None else env
        redis = cls.redis_from_env(env)
        ari_url = _setting(env, "ARI_URL", DEFAULT_ARI_URL).rstrip("/")
        _check_ari_url(ari_url)
        return cls(
            redis_url=redis.redis_url,
            redis_prefix=redis.redis_prefix,
            routes_cache=_routes_cache(env),
            ari_url=ari_url,
            ari_username=env.get("ARI_USERNAME", ""),
            ari_password=env.get("ARI_PASSWORD", ""),
            ari_app=_setting(env, "ARI_APP", DEFAULT_ARI_APP),
        )

    @classmethod
    def for_agi(cls, env: Mapping[str, str] | None = None) -> Settings:
        """What the ``agi`` service reads (REDIS_*, AGI_*), checked; ARI_* is not its
        business."""
        env = os.environ if env is None else env
        redis = cls.redis_from_env(env)
        host, port = parse_listen(_setting(env, "AGI_LISTEN", DEFAULT_AGI_LISTEN))
        allow = tuple(a.strip() for a in env.get("AGI_ALLOW", "").split(",") if a.strip())
        return cls(redis_url=redis.redis_url, redis_prefix=redis.redis_prefix,
                   routes_cache=_routes_cache(env), agi_host=host, agi_port=port,
                   agi_allow=allow)

    def require_ari_credentials(self) -> None:
        if not self.ari_username or not self.ari_password:
            raise SettingsError(
                "ARI_USERNAME and ARI_PASSWORD must be set to the credentials of an ari.conf "
                "user (the lab's are in README.md, section 'The lab')")
