"""Redis URLs: plain, TLS, Sentinel (parsed; there is no sentinel here), and password masking."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio

from redis_seed.connection import async_client, sync_client
from redis_seed.urls import SentinelTarget, check_redis_url, mask_url, parse_sentinel_url


@pytest.mark.parametrize(("url", "target"), [
    ("redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/mymaster",
     SentinelTarget(hosts=(("10.0.0.1", 26379), ("10.0.0.2", 26380)), service_name="mymaster")),
    ("redis+sentinel://sentinel-a,sentinel-b/routes/3",
     SentinelTarget(hosts=(("sentinel-a", 26379), ("sentinel-b", 26379)), service_name="routes",
                    db=3)),
    ("redis+sentinel://:p%40ss@s1:5000/mymaster/0",
     SentinelTarget(hosts=(("s1", 5000),), service_name="mymaster", password="p@ss")),
    ("rediss+sentinel://router:secret@s1/mymaster?sentinel_password=other",
     SentinelTarget(hosts=(("s1", 26379),), service_name="mymaster", username="router",
                    password="secret", sentinel_password="other", ssl=True)),
    ("redis+sentinel://[::1]:26379,[fe80::2]/mymaster",
     SentinelTarget(hosts=(("::1", 26379), ("fe80::2", 26379)), service_name="mymaster")),
])
def test_sentinel_urls_are_parsed(url: str, target: SentinelTarget) -> None:
    assert parse_sentinel_url(url) == target


@pytest.mark.parametrize(("url", "words"), [
    ("redis+sentinel://s1:26379", "names no service"),
    ("redis+sentinel://s1:26379/", "names no service"),
    ("redis+sentinel://s1:26379/m/x", "bad database number"),
    ("redis+sentinel://s1:26379/m/0/extra", "too many path segments"),
    ("redis+sentinel://s1:99999/m", "bad sentinel port"),
    ("redis+sentinel://s1,,s2/m", "empty sentinel address"),
    ("redis+sentinel://:pw@s1/m?timeout=3", "unknown Sentinel URL option"),
    ("redis://127.0.0.1/0", "not a Sentinel URL"),
])
def test_bad_sentinel_urls_say_what_is_wrong(url: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_sentinel_url(url)


def test_errors_about_a_url_never_show_its_password() -> None:
    with pytest.raises(ValueError) as info:
        parse_sentinel_url("redis+sentinel://:hunter2@s1:26379")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(("url", "masked"), [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://:hunter2@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("rediss://router:hunter2@redis.example:6380/1", "rediss://router:***@redis.example:6380/1"),
    ("redis://hunter2@127.0.0.1/0", "redis://***@127.0.0.1/0"),
    ("redis+sentinel://:hunter2@s1,s2/mymaster?sentinel_password=hunter3",
     "redis+sentinel://:***@s1,s2/mymaster?sentinel_password=***"),
    ("unix:///run/redis.sock?db=0&password=hunter2", "unix:///run/redis.sock?db=0&password=***"),
    # the client key's password, which the URL check accepts with rediss://
    ("rediss://127.0.0.1/0?ssl_keyfile=/k.pem&ssl_password=hunter2",
     "rediss://127.0.0.1/0?ssl_keyfile=/k.pem&ssl_password=***"),
])
def test_mask_url_hides_passwords(url: str, masked: str) -> None:
    assert mask_url(url) == masked


#: Passwords with characters that end the host part for a URL parser ('#', '/', '?'), an '@'
#: (redis-py splits the user information on the last one), and a mistyped '://': none of
#: 's3cr', 'et@', 'ret' may show, whatever the URL's shape.
LEAKY = [
    "redis://:s3cr#et@127.0.0.1:16399/0",
    "redis://:s3cr/et@127.0.0.1:16399/0",
    "redis://:s3cr?et@127.0.0.1:16399/0",
    "redis://user:s3cr#et@127.0.0.1:16399/0",
    "redis//:s3cret@127.0.0.1:16399/0",
    "redis:/:s3cret@127.0.0.1:16399/0",
    "redis:s3cret@127.0.0.1:16399/0",
    "s3cret@127.0.0.1:16399/0",
    "redis://:s3c@ret@127.0.0.1:16399/0",
    "redis://:s3c@r/et@127.0.0.1:16399/0",
    "redis://:1234/s3cret@127.0.0.1:16399/0",
    "redis://:1234#s3cret@127.0.0.1:16399/0",
    "redis://:1234?s3cret@127.0.0.1:16399/0",
    "redis:/:s3://cret@127.0.0.1:16399/0",
    "redis://127.0.0.1:16399/0?password=s3c@ret",
    "redis+sentinel://:s3cr/et@s1,s2/mymaster",
    "redis+sentinel://:s3cr?et@s1,s2/mymaster",
    "redis+sentinel://:s3c@ret@s1,s2/mymaster?sentinel_password=s3cr#et",
    "unix://:s3cr/et@/run/redis.sock",
    "http//u:s3cret@x",
    # a '?' then a '=' in the password: the part before the '?' was quoted as a sentinel
    # address, the part after it as an unknown option
    "redis+sentinel://router:s3cr?et=x@127.0.0.1:26379/mymaster",
    "redis+sentinel://:s3cr?et=x@127.0.0.1:26379/mymaster",
    "redis://router:?s3cret=x@127.0.0.1:16399/0",
    "rediss://router:?s3cret=x@127.0.0.1:16399/0",
]


def _shows_the_secret(text: str) -> bool:
    return any(piece in text for piece in ("s3cr", "et@", "ret"))


@pytest.mark.parametrize("url", LEAKY)
def test_mask_url_hides_every_part_of_an_odd_password(url: str) -> None:
    masked = mask_url(url)
    assert not _shows_the_secret(masked), masked
    assert "***" in masked


#: The odd URLs the check takes (redis-py splits the user information on the last '@'; a
#: query's password is the query's): nothing to show, and taken, not refused.
CHECKED_OK = {
    "redis://:s3c@ret@127.0.0.1:16399/0",
    "redis://127.0.0.1:16399/0?password=s3c@ret",
    "redis+sentinel://:s3c@ret@s1,s2/mymaster?sentinel_password=s3cr#et",
}


@pytest.mark.parametrize("url", [u for u in LEAKY if u not in CHECKED_OK])
def test_the_check_of_an_odd_url_never_shows_its_password(url: str) -> None:
    # The assertion in an `except` only: a check that took every URL passed it (and so did
    # the URLs the check takes, asserting nothing). Each case now says which way it goes.
    with pytest.raises(ValueError) as refused:
        check_redis_url(url)
    assert not _shows_the_secret(str(refused.value)), str(refused.value)


@pytest.mark.parametrize("url", sorted(CHECKED_OK))
def test_the_odd_urls_the_check_takes_are_taken(url: str) -> None:
    check_redis_url(url)


@pytest.mark.parametrize(("url", "masked"), [
    ("redis://:s3c@ret@127.0.0.1:16399/0", "redis://:***@127.0.0.1:16399/0"),
    ("redis://router:s3c@ret@127.0.0.1:16399/0", "redis://router:***@127.0.0.1:16399/0"),
    ("redis://:s3cr#et@127.0.0.1:16399/0", "redis://***@127.0.0.1:16399/0"),
    ("redis//:s3cret@127.0.0.1:16399/0", "redis//:***@127.0.0.1:16399/0"),
    ("s3cret@127.0.0.1:16399/0", "***@127.0.0.1:16399/0"),
    # an '@' in a query value hides the host too: too little rather than a password
    ("redis://:pw@127.0.0.1/0?password=s3c@ret&db=1", "redis://***&db=1"),
    ("unix:///run/redis@1.sock?db=1", "unix:///run/redis@1.sock?db=1"),
    ("unix://:s3cret@/run/redis@1.sock", "unix://:***@/run/redis@1.sock"),
])
def test_mask_url_keeps_what_is_not_secret(url: str, masked: str) -> None:
    assert mask_url(url) == masked


_EVERY_OPTION_URLS = [
    "redis://127.0.0.1:6390?socket_timeout=2.5&socket_connect_timeout=1"
    "&health_check_interval=30&socket_keepalive=no&client_name=router-1&username=u&password=p"
    "&db=3",
    "rediss://127.0.0.1:6390/0?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=optional"
    "&ssl_check_hostname=false&ssl_certfile=/c.pem&ssl_keyfile=/k.pem&ssl_password=x"
    "&ssl_ca_path=/etc/ssl/certs",
    "unix:///run/redis.sock?socket_timeout=1&socket_connect_timeout=1&db=2&client_name=r"
    "&health_check_interval=5",
]


def test_the_option_urls_below_name_every_option_the_check_lets_through() -> None:
    from redis_seed.urls import _QUERY_OPTIONS, _TLS_QUERY_OPTIONS

    named = {f"{name}=" for url in _EVERY_OPTION_URLS for name in [
        item.partition("=")[0] for item in url.partition("?")[2].split("&")]}
    assert {f"{name}=" for name in [*_QUERY_OPTIONS, *_TLS_QUERY_OPTIONS]} <= named


@pytest.mark.parametrize("url", _EVERY_OPTION_URLS)
async def test_every_query_option_the_check_lets_through_is_one_redis_py_takes(url: str) -> None:
    # redis-py hands an unknown option to its connection class, which raises TypeError at
    # the first command: making the connection object (no I/O) shows it, sync and asyncio.
    sync = sync_client(url)
    aio = async_client(url)
    try:
        sync.connection_pool.make_connection()
        aio.connection_pool.make_connection()
    finally:
        sync.close()
        await aio.aclose()


def test_plain_and_tls_urls_make_clients_without_connecting() -> None:
    plain = sync_client("redis://:pw@127.0.0.1:6390/2")
    tls = sync_client("rediss://127.0.0.1:6390/0")
    try:
        kwargs = plain.connection_pool.connection_kwargs
        assert (kwargs["host"], kwargs["port"], kwargs["db"], kwargs["password"]) == (
            "127.0.0.1", 6390, 2, "pw")
        assert "SSL" in tls.connection_pool.connection_class.__name__
    finally:
        plain.close()
        tls.close()


async def test_sentinel_url_makes_a_master_client_without_connecting() -> None:
    client = async_client("redis+sentinel://:pw@127.0.0.1:26999/mymaster/4")
    try:
        assert isinstance(client, redis.asyncio.Redis)
        pool = client.connection_pool
        assert pool.service_name == "mymaster"  # type: ignore[attr-defined]
        assert pool.connection_kwargs["db"] == 4
        assert pool.connection_kwargs["password"] == "pw"
    finally:
        await client.aclose()
    sync = sync_client("redis+sentinel://127.0.0.1:26999/mymaster")
    try:
        assert isinstance(sync, redis.Redis)
    finally:
        sync.close()


@pytest.mark.parametrize("url", ["REDIS://:pw@127.0.0.1:6390/2", "Redis://:pw@127.0.0.1:6390/2",
                                 "UNIX:///run/redis.sock?db=2&password=pw"])
async def test_a_url_whose_scheme_is_in_capitals_makes_clients(url: str) -> None:
    # the check takes any case (schemes are case-insensitive, RFC 3986 3.1); redis-py's
    # from_url only the lower case, with a traceback for `REDIS://`
    check_redis_url(url)
    sync = sync_client(url)
    aio = async_client(url)
    try:
        for client in (sync, aio):
            kwargs = client.connection_pool.connection_kwargs
            assert (kwargs["db"], kwargs["password"]) == (2, "pw")
    finally:
        sync.close()
        await aio.aclose()


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "127.0.0.1:6379"])
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        sync_client(url)


@pytest.mark.parametrize("url", [
    "redis://127.0.0.1:6379/0", "redis://:pw@localhost", "rediss://u:pw@redis.example:6380/1",
    "unix:///run/redis.sock?db=1", "redis+sentinel://s1,s2:26380/mymaster/2",
    "rediss+sentinel://:pw@s1/mymaster", "redis://:p@ss@localhost/0",
    "redis://:p%2F%3F%23ss@localhost/0", "redis://localhost/0?password=p@ss",
    "unix:///run/redis@1.sock", "unix://:pw@/run/redis@1.sock",
    "redis+sentinel://:p#ss@s1/mymaster",
    "redis://127.0.0.1/0?socket_timeout=2.5&socket_connect_timeout=1&health_check_interval=30"
    "&socket_keepalive=true&client_name=router-1&username=router",
    "rediss://127.0.0.1/0?ssl_ca_certs=/etc/ca.pem&ssl_cert_reqs=required"
    "&ssl_check_hostname=false&ssl_certfile=/c.pem&ssl_keyfile=/k.pem&ssl_password=x",
    "unix:///run/redis.sock?socket_timeout=1",
])
def test_usable_redis_urls_pass_the_check(url: str) -> None:
    check_redis_url(url)


@pytest.mark.parametrize(("url", "words"), [
    ("127.0.0.1:6379", "not a Redis URL"),
    ("http://127.0.0.1:6379", "unsupported scheme"),
    ("redis://:hunter2@127.0.0.1:port/0", "malformed Redis URL"),
    ("redis://:hunter2@127.0.0.1:99999/0", "malformed Redis URL"),
    ("redis://127.0.0.1/db0", "bad database number"),
    # (digits str.isdigit takes and int() refuses: a ValueError, not this message)
    ("redis://127.0.0.1/\u00b2", "bad database number"),
    ("redis://127.0.0.1/0?db=\u00b2", "bad value"),
    ("redis://127.0.0.1/0?health_check_interval=\u0663", "bad value"),
    ("redis+sentinel://s1/m/\u00b2", "bad database number"),
    ("unix://", "names no socket path"),
    ("redis+sentinel://:hunter2@s1", "names no service"),
    ("redis://:hunter2#x@127.0.0.1/0", "percent-encode"),
    ("redis://:hunter2/x@127.0.0.1/0", "percent-encode"),
    ("redis://:hunter2?x@127.0.0.1/0", "percent-encode"),
    ("redis://:1234/hunter2@127.0.0.1/0", "percent-encode"),
    ("redis+sentinel://:hunter2/x@s1/mymaster", "percent-encode"),
    ("redis//:hunter2@127.0.0.1/0", "not a Redis URL"),
    # no host: redis-py would use localhost:6379, maybe another Redis than meant
    ("redis://", "names no host"),
    ("redis:///3", "names no host"),
    ("redis://:hunter2@/0", "names no host"),
    ("rediss://", "names no host"),
    # query options redis-py does not know fail at the first command with a TypeError
    ("redis://:hunter2@127.0.0.1/0?bogus=1", "unknown option 'bogus'"),
    ("redis://:hunter2@127.0.0.1/0?ssl_ca_certs=/ca.pem", "only with rediss://"),
    ("unix://:hunter2@/run/redis.sock?socket_keepalive=1", "unknown option"),
    ("redis://127.0.0.1/0?db=abc&password=hunter2", "bad value 'abc' for db"),
    ("redis://127.0.0.1/0?socket_timeout=soon&password=hunter2", "for socket_timeout"),
    ("redis://127.0.0.1/0?password=hunter2&socket_keepalive=maybe", "true or false"),
    ("rediss://127.0.0.1/0?password=hunter2&ssl_cert_reqs=always", "none, optional or required"),
    # given twice: redis-py took one of the two without a word
    ("redis://:hunter2@127.0.0.1/0?password=other", "gives password twice"),
    ("redis://u:hunter2@127.0.0.1/0?username=v", "gives username twice"),
    ("redis://:hunter2@127.0.0.1/0?db=1", "gives db twice"),
    ("redis://:hunter2@127.0.0.1?db=0&db=3", "gives db twice"),
    # a raw '#' ends the URL for redis-py: the rest of the password was cut off
    ("redis://127.0.0.1/0?password=hunter2#more", "percent-encode it"),
    ("redis://127.0.0.1/0?password=hunter2#", "percent-encode it"),
    ("redis+sentinel://s1/m?sentinel_password=hunter2&sentinel_password=b", "gives sentinel_"),
    ("rediss+sentinel://s1/m?ssl_ca_certs=/a&ssl_ca_certs=/b&ssl_password=hunter2",
     "gives ssl_ca_certs twice"),
])
def test_malformed_redis_urls_say_what_is_wrong_without_the_password(url: str, words: str) -> None:
    with pytest.raises(ValueError, match=words) as info:
        check_redis_url(url)
    assert "hunter2" not in str(info.value)
