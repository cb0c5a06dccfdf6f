"""What the console script says when Redis answers, but with an error: one line saying what
is wrong and what to do, exit 2, no traceback, no password (SPEC section 6)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import redis

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = str(ROOT / "redis_seed" / "routes.example.yaml")
PREFIX = "cli-test"


def run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "outbound_router.cli", *args],
                          env={**os.environ, "REDIS_PREFIX": PREFIX, **env},
                          capture_output=True, text=True, timeout=60, check=False)


def one_clear_line(out: subprocess.CompletedProcess[str], *words: str) -> str:
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    lines = out.stderr.splitlines()
    assert len(lines) == 1, lines
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]



def seed_as(redis_server: str, redis_client: redis.Redis, user: str, password: str,
            *categories: str) -> subprocess.CompletedProcess[str]:
    """`seed` of the example file as a Redis user allowed every key and channel and only
    these command categories."""
    redis_client.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*",
                                 *categories)
    url = redis_server.replace("redis://", f"redis://{user}:{password}@")
    return run("seed", EXAMPLE, REDIS_URL=url)


def test_a_key_of_another_program_under_the_prefix(redis_server: str,
                                                  redis_client: redis.Redis) -> None:
    redis_client.set(f"{PREFIX}:current", "not ours")
    for args in (("versions",), ("explain", "911234567")):
        one_clear_line(run(*args, REDIS_URL=redis_server),
                       "answered with an error", "WRONGTYPE", "REDIS_PREFIX")
    # The switch checks every key's type before it writes: a Lua script is not undone by
    # an error, and the history used to name the version, which no longer expired.
    one_clear_line(run("seed", EXAMPLE, REDIS_URL=redis_server),
                   f"{PREFIX}:current is a string", "REDIS_PREFIX", "nothing was changed")
    assert redis_client.lrange(f"{PREFIX}:history", 0, -1) == []
    assert redis_client.zrange(f"{PREFIX}:versions", 0, -1) == []
    assert redis_client.get(f"{PREFIX}:current") == b"not ours"
    written = list(redis_client.scan_iter(f"{PREFIX}:version:*"))
    assert written and all(redis_client.ttl(key) > 0 for key in written)  # left to expire


def test_a_user_that_may_only_read_cannot_seed(redis_server: str,
                                               redis_client: redis.Redis) -> None:
    out = seed_as(redis_server, redis_client, "reader", "readpw", "+@read", "+@connection")
    line = one_clear_line(out, "may not do this", f"{PREFIX}:*")
    assert "readpw" not in line
    assert redis_client.keys(f"{PREFIX}:*") == []


def test_a_user_that_may_run_scripts_but_only_read_is_told_what_to_grant(
        redis_server: str, redis_client: redis.Redis) -> None:
    # The switch and write scripts ran, and their first write was refused inside the script:
    # "answered with an error: The user executing the script can't run this command...",
    # with nothing about what to do.
    out = seed_as(redis_server, redis_client, "scripter", "scriptpw",
                  "+@read", "+@connection", "+@scripting")
    line = one_clear_line(out, "may not do this", "write on them", f"{PREFIX}:*")
    assert "scriptpw" not in line
    assert redis_client.keys(f"{PREFIX}:*") == []


def test_a_user_that_may_read_and_write_but_not_run_scripts_is_told_so(
        redis_server: str, redis_client: redis.Redis) -> None:
    # It was told to get "read and write on the keys", which it had.
    out = seed_as(redis_server, redis_client, "writer", "writepw",
                  "+@read", "+@write", "+@connection")
    one_clear_line(out, "may not do this", "'evalsha'", "EVALSHA and SCRIPT LOAD")
    assert redis_client.keys(f"{PREFIX}:*") == []


def test_redis_out_of_memory(redis_server: str, redis_client: redis.Redis) -> None:
    redis_client.config_set("maxmemory", 1)
    try:
        one_clear_line(run("seed", EXAMPLE, REDIS_URL=redis_server), "out of memory",
                       "maxmemory")
    finally:
        redis_client.config_set("maxmemory", 0)


def test_a_password_missing_or_wrong_is_not_called_unreachable(redis_server: str,
                                                              redis_client: redis.Redis) -> None:
    redis_client.config_set("requirepass", "right-pw")
    # None sent: it said "refused the credentials: HELLO must be called with the client
    # already authenticated...", of credentials nobody gave.
    for url, says in ((redis_server, "requires a password, and REDIS_URL gives none"),
                      (redis_server.replace("redis://", "redis://:wrong-pw@"),
                       "refused the credentials")):
        line = one_clear_line(run("versions", REDIS_URL=url), says, "REDIS_URL")
        assert "Start Redis" not in line and "wrong-pw" not in line and "HELLO" not in line


def test_a_database_that_redis_does_not_have(redis_server: str) -> None:
    # (it said: does another program use keys under REDIS_PREFIX?)
    url = redis_server.rsplit("/", 1)[0] + "/99"
    line = one_clear_line(run("versions", REDIS_URL=url), "no such database", "REDIS_URL")
    assert "REDIS_PREFIX" not in line


def test_a_sentinel_url_pointing_at_a_plain_redis(redis_server: str) -> None:
    host_port = redis_server.split("//", 1)[1].split("/", 1)[0]
    line = one_clear_line(run("versions", REDIS_URL=f"redis+sentinel://{host_port}/mymaster"),
                          "not a Sentinel", "redis://host:port/db")
    assert "REDIS_PREFIX" not in line


def test_a_bad_redis_prefix_is_a_clear_error() -> None:
    # (an empty one counts as unset: tests/test_cli.py::test_empty_variables_count_as_unset)
    for prefix in ("bad prefix", "a:b c"):
        one_clear_line(run("versions", REDIS_PREFIX=prefix), "REDIS_PREFIX", "bad Redis key prefix")


def test_settings_of_the_services_do_not_stop_the_redis_commands(redis_server: str) -> None:
    env = {"REDIS_URL": redis_server, "AGI_LISTEN": "bogus", "ARI_URL": "ftp://x"}
    assert run("seed", EXAMPLE, **env).returncode == 0
    out = run("versions", **env)
    assert out.returncode == 0 and "v000001" in out.stdout, out.stderr
    assert run("explain", "911234567", **env).returncode == 0
    one_clear_line(run("agi", **env), "AGI_LISTEN")


def test_a_user_that_may_not_publish_the_notification_changes_nothing(
        redis_server: str, redis_client: redis.Redis) -> None:
    # Redis 7 gives a new ACL user no pub/sub channel: the switch script wrote the new
    # current version, then failed at its PUBLISH, and the seed said it had failed while
    # every router loaded the new version at its next poll.
    first = run("seed", EXAMPLE, REDIS_URL=redis_server)
    assert first.returncode == 0, first.stderr
    redis_client.execute_command("ACL", "SETUSER", "seeder", "on", ">seedpw",
                                 f"~{PREFIX}:*", "+@all")  # keys and commands, no channel
    url = redis_server.replace("redis://", "redis://seeder:seedpw@")
    line = one_clear_line(run("seed", EXAMPLE, REDIS_URL=url),
                          f"may not publish on the channel {PREFIX}:notify",
                          f"&{PREFIX}:notify", "nothing was changed")
    assert "seedpw" not in line
    assert redis_client.hget(f"{PREFIX}:current", "version") == first.stdout.strip().encode()
    assert redis_client.lrange(f"{PREFIX}:history", 0, -1) == [first.stdout.strip().encode()]
    assert redis_client.zcard(f"{PREFIX}:versions") == 1


def test_a_current_pointer_that_holds_no_version_id(redis_server: str,
                                                    redis_client: redis.Redis) -> None:
    # Bytes of another program that are no UTF-8: a traceback from each command.
    redis_client.hset(f"{PREFIX}:current", mapping={"version": b"\xff\xfe", "sha256": b"\xff"})
    for args in (("versions",), ("explain", "911234567"), ("rollback",)):
        one_clear_line(run(*args, REDIS_URL=redis_server),
                       f"{PREFIX}:current holds no version id", "REDIS_PREFIX")


def test_seed_a_file_whose_name_is_no_utf8(redis_server: str, redis_client: redis.Redis,
                                           tmp_path: Path) -> None:
    # (a Latin-1 name from an old system or a share): redis-py refused the source name, a
    # traceback and exit 1, the status of a bad routes file, after a version id was taken.
    name = os.fsencode(tmp_path) + b"/routes-\xe9t\xe9.yaml"
    Path(os.fsdecode(name)).write_bytes(Path(EXAMPLE).read_bytes())
    out = subprocess.run([sys.executable, "-m", "outbound_router.cli", "seed", name],
                         env={**os.environ, "REDIS_PREFIX": PREFIX, "REDIS_URL": redis_server},
                         capture_output=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr.decode(errors="replace")
    assert out.stdout.strip() == b"v000001"
    source = redis_client.hget(f"{PREFIX}:version:v000001", "source")
    assert source is not None and source.endswith("routes-\ufffdt\ufffd.yaml".encode())


def test_seed_warns_when_redis_may_evict_the_routes(redis_server: str,
                                                    redis_client: redis.Redis) -> None:
    # A Redis shared with a cache (allkeys-lru) may evict the current version, which never
    # expires: a router started then has no routes. Nothing said so.
    quiet = run("seed", EXAMPLE, REDIS_URL=redis_server)
    assert quiet.returncode == 0 and "warning" not in quiet.stderr, quiet.stderr
    redis_client.config_set("maxmemory-policy", "allkeys-lru")
    warned = run("seed", EXAMPLE, REDIS_URL=redis_server)
    assert warned.returncode == 0 and warned.stdout.strip() == "v000002"
    assert "maxmemory-policy allkeys-lru" in warned.stderr and "noeviction" in warned.stderr


def test_a_damaged_version_counter_is_named_with_the_value_to_set(
        redis_server: str, redis_client: redis.Redis) -> None:
    # A counter set by hand to something else: `seed` gave exit 2 with Redis's own "value
    # is not an integer or out of range", saying neither which key nor what to do.
    first = run("seed", EXAMPLE, REDIS_URL=redis_server)
    assert first.returncode == 0, first.stderr
    redis_client.set(f"{PREFIX}:counter", "oops")
    line = one_clear_line(run("seed", EXAMPLE, REDIS_URL=redis_server),
                          f"{PREFIX}:counter holds 'oops'", f"SET {PREFIX}:counter 1",
                          "nothing was changed")
    assert "Traceback" not in line
    assert redis_client.zrange(f"{PREFIX}:versions", 0, -1) == [b"v000001"]
    redis_client.set(f"{PREFIX}:counter", "1")
    again = run("seed", EXAMPLE, REDIS_URL=redis_server)
    assert (again.returncode, again.stdout) == (0, "v000002\n"), again.stderr
