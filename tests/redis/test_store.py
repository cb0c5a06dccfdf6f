"""Versions in a real redis-server: seed, load, explain, failed seeds, rollback, pruning."""

from __future__ import annotations

import logging

import pytest
import redis
from redis_tables import generation_table

from outbound_router.local_redis import RedisProcess
from redis_seed import store
from redis_seed.errors import (
    CorruptVersion,
    NoCurrentVersion,
    NoSuchVersion,
    RoutesFileError,
    SwitchNotConfirmed,
    VersionStoreError,
)
from redis_seed.keys import Keys, version_number
from redis_seed.routes_file import parse_routes
from redis_seed.store import list_versions, load_current, prune, publish, rollback
from routing.explain import explain
from routing.model import RoutingTable
from routing.snapshot import Snapshot


def test_seed_then_load_gives_back_the_table(client: redis.Redis) -> None:
    table = generation_table(3)
    version = publish(client, table, source="routes.yaml")
    assert version == "v000001"
    assert load_current(client) == (version, table)


def test_seed_then_explain_shows_the_seeded_routes(client: redis.Redis) -> None:
    table = parse_routes("""
carriers: {peering: {trunks: [carrier-a]}, cheap: {trunks: [carrier-b]}}
target_patterns: {spain: {prefix: "+34"}}
outgoing_routes:
  - {name: spain-peering, pattern: spain, carrier: peering, priority: 1, metric: 1}
  - {name: spain-cheap, pattern: spain, carrier: cheap, priority: 1, metric: 2}
""")
    publish(client, table)
    version, loaded = load_current(client)
    decision = explain(Snapshot.build(loaded, version), "911234567")
    assert decision["status"] == "OK"
    assert decision["number"] == "+34911234567"
    assert [(r["route"], r["share"]) for r in decision["tiers"][0]["routes"]] == [
        ("spain-peering", 1 / 3), ("spain-cheap", 2 / 3)]


def test_versions_are_numbered_in_order_and_listed_with_the_current_marked(
        client: redis.Redis) -> None:
    versions = [publish(client, generation_table(g), source=f"gen{g}.yaml") for g in (1, 2, 3)]
    assert versions == ["v000001", "v000002", "v000003"]
    infos = list_versions(client)
    assert [(i.version, i.source, i.routes, i.current) for i in infos] == [
        ("v000001", "gen1.yaml", 4, False),
        ("v000002", "gen2.yaml", 4, False),
        ("v000003", "gen3.yaml", 4, True),
    ]
    assert all(i.created is not None for i in infos)
    assert str(infos[-1]).startswith("* v000003")


def test_seed_notifies_readers_with_the_new_version(client: redis.Redis) -> None:
    pubsub = client.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(Keys().notify)
    try:
        version = publish(client, generation_table(1))
        message = None
        for _ in range(50):
            message = pubsub.get_message(timeout=0.1)
            if message is not None:
                break
        assert message is not None and message["data"] == version.encode()
    finally:
        pubsub.close()


def test_a_seed_that_fails_before_the_switch_leaves_the_current_version(
        client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    good = generation_table(1)
    first = publish(client, good)

    publish_dying_before_its_switch(client, generation_table(2), monkeypatch)

    assert load_current(client) == (first, good)
    assert [i.version for i in list_versions(client)] == [first]
    # the half-written version is not listed and expires by itself
    assert 0 < client.ttl(Keys().version("v000002")) <= store.UNPUBLISHED_TTL


def test_a_rejected_file_writes_nothing(client: redis.Redis) -> None:
    publish(client, generation_table(1))
    before = {k: client.dump(k) for k in client.keys("*")}
    with pytest.raises(RoutesFileError):
        publish(client, parse_routes("outgoing_routes: []\n"))
    assert {k: client.dump(k) for k in client.keys("*")} == before


def test_a_corrupted_version_is_refused_by_load(client: redis.Redis) -> None:
    version = publish(client, generation_table(1))
    client.hset(Keys().version(version), "data", b"x" * 10)
    with pytest.raises(CorruptVersion, match="checksum"):
        load_current(client)


@pytest.mark.parametrize(("field", "value", "says"), [
    ("routes", b"x", "'routes' field that is no number"),
    ("version", b"\xff", "'version' field that is not text"),
    ("format", b"\xfe", "'format' field that is not text"),
])
def test_a_field_outside_the_checksum_that_is_garbled_is_a_corrupt_version(
        client: redis.Redis, field: str, value: bytes, says: str) -> None:
    # It raised ValueError or UnicodeDecodeError, which `explain` did not expect (traceback).
    version = publish(client, generation_table(1))
    client.hset(Keys().version(version), field, value)
    with pytest.raises(CorruptVersion, match=says):
        load_current(client)


def test_load_without_any_seed_says_to_seed(client: redis.Redis) -> None:
    with pytest.raises(NoCurrentVersion, match="outbound-router seed"):
        load_current(client)


def test_rollback_defaults_to_the_previous_version_and_notifies(client: redis.Redis) -> None:
    tables = {publish(client, generation_table(g)): generation_table(g) for g in (1, 2, 3)}
    assert rollback(client) == "v000002"
    assert load_current(client) == ("v000002", tables["v000002"])
    assert rollback(client) == "v000001"
    with pytest.raises(NoSuchVersion, match="no version before v000001"):
        rollback(client)
    assert rollback(client, "v000003") == "v000003"
    assert load_current(client) == ("v000003", tables["v000003"])
    assert [i.current for i in list_versions(client)] == [False, False, True]


def test_rollback_goes_back_to_what_was_current_not_to_a_version_rolled_away_from(
        client: redis.Redis) -> None:
    # It took the version just before by number: after seed A, seed B, rollback (A), seed C,
    # a rollback brought back B, the version the operator had rolled away from.
    a = publish(client, generation_table(1))
    publish(client, generation_table(2))
    assert rollback(client) == a
    c = publish(client, generation_table(3))
    assert rollback(client) == a
    assert load_current(client) == (a, generation_table(1))
    assert rollback(client, c) == c  # an explicit rollback is a step forward...
    assert rollback(client) == a  # ...that the next one undoes


def test_rollback_without_a_history_takes_the_version_before_by_number(
        client: redis.Redis) -> None:
    # Versions seeded before the history was kept.
    for g in (1, 2, 3):
        publish(client, generation_table(g))
    client.delete(Keys().history)
    assert rollback(client) == "v000002"
    assert rollback(client) == "v000001"


def test_rollback_changes_nothing_when_the_current_version_changed_meanwhile(
        client: redis.Redis) -> None:
    publish(client, generation_table(1))
    publish(client, generation_table(2))
    sha = client.hget(Keys().version("v000001"), "sha256").decode()
    with pytest.raises(VersionStoreError, match="changed from v000009 while rolling back"):
        store._switch(client, Keys(), "v000001", sha, back_from="v000009")
    assert load_current(client)[0] == "v000002"


def test_a_seed_never_prunes_the_version_it_replaced(client: redis.Redis) -> None:
    # With --keep 2, the seed that replaced v000001 (current after a rollback) pruned it, and
    # the version live just before that seed could no longer be restored.
    for g in (1, 2, 3):
        publish(client, generation_table(g))
    rollback(client, "v000001")
    publish(client, generation_table(4), keep=2)
    assert [i.version for i in list_versions(client)] == ["v000001", "v000003", "v000004"]
    assert rollback(client) == "v000001"


def test_rollback_to_the_current_version_changes_nothing(client: redis.Redis) -> None:
    publish(client, generation_table(1))
    publish(client, generation_table(2))
    before = {k: client.dump(k) for k in client.keys("*")}
    pubsub = client.pubsub()
    pubsub.subscribe(Keys().notify)
    assert pubsub.get_message(timeout=1)["type"] == "subscribe"
    assert rollback(client, "v000002") == "v000002"
    assert pubsub.get_message(timeout=0.2) is None  # no reader reloads for nothing
    pubsub.close()
    assert {k: client.dump(k) for k in client.keys("*")} == before
    assert rollback(client) == "v000001"


def test_rollback_to_an_unknown_version_changes_nothing(client: redis.Redis) -> None:
    publish(client, generation_table(1))
    publish(client, generation_table(2))
    with pytest.raises(NoSuchVersion, match="v000009"):
        rollback(client, "v000009")
    with pytest.raises(ValueError, match="not a version id"):
        rollback(client, "latest")
    assert load_current(client)[0] == "v000002"


def test_rollback_to_a_corrupted_version_changes_nothing(client: redis.Redis) -> None:
    """Made current, it would be named by `versions` while every reader refused it."""
    publish(client, generation_table(1))
    publish(client, generation_table(2))
    client.hset(Keys().version("v000001"), "data", b"garbage")
    with pytest.raises(CorruptVersion, match="v000001 does not match its checksum.*unchanged"):
        rollback(client, "v000001")
    with pytest.raises(CorruptVersion):
        rollback(client)
    assert load_current(client) == ("v000002", generation_table(2))


def test_rollback_with_nothing_seeded_says_so(client: redis.Redis) -> None:
    with pytest.raises(NoCurrentVersion):
        rollback(client)


def test_old_versions_beyond_keep_are_pruned(client: redis.Redis) -> None:
    for g in range(1, 7):
        publish(client, generation_table(g), keep=3)
    assert [i.version for i in list_versions(client)] == ["v000004", "v000005", "v000006"]
    assert not client.exists(Keys().version("v000001"))
    assert client.exists(Keys().version("v000004"))


def test_pruning_never_removes_the_current_version(client: redis.Redis) -> None:
    for g in range(1, 4):
        publish(client, generation_table(g))
    rollback(client, "v000001")
    assert prune(client, keep=1) == ["v000002"]
    assert [(i.version, i.current) for i in list_versions(client)] == [
        ("v000001", True), ("v000003", False)]
    assert load_current(client)[0] == "v000001"


def test_pruning_spares_a_version_made_current_while_it_ran(
        client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    # prune reads the current version, then deletes: a rollback to a doomed version in between
    # left the current pointer naming a deleted version (every reader refused it).
    for g in range(1, 5):
        publish(client, generation_table(g))
    real_back_target = store._back_target

    def rollback_meanwhile(*args: object) -> object:
        target = real_back_target(*args)  # type: ignore[arg-type]
        monkeypatch.setattr(store, "_back_target", real_back_target)
        rollback(client, "v000001")  # between prune's reads and its deletes
        return target

    monkeypatch.setattr(store, "_back_target", rollback_meanwhile)
    assert prune(client, keep=1) == ["v000002"]  # v000001 (current now) and v000003 spared
    assert load_current(client) == ("v000001", generation_table(1))


def test_the_key_prefix_separates_two_routers(client: redis.Redis) -> None:
    publish(client, generation_table(1), keys=Keys("lab-a"))
    publish(client, generation_table(2), keys=Keys("lab-b"))
    publish(client, generation_table(3), keys=Keys("lab-b"))
    assert load_current(client, keys=Keys("lab-a"))[1] == generation_table(1)
    assert load_current(client, keys=Keys("lab-b"))[0] == "v000002"
    assert all(k.startswith((b"lab-a:", b"lab-b:")) for k in client.keys("*"))


def test_seed_logs_the_version(client: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="redis_seed.store")
    publish(client, generation_table(1), source="x.yaml")
    assert "published routing version v000001 (4 routes, from x.yaml)" in caplog.text


def test_versions_written_in_the_older_dict_format_still_load(client: redis.Redis) -> None:
    table = generation_table(4)
    version = publish(client, table, fmt="1")
    assert client.hget(Keys().version(version), "format") == b"1"
    assert load_current(client) == (version, table)


def test_a_versions_line_says_route_for_one_and_routes_for_more() -> None:
    from datetime import UTC, datetime

    created = datetime(2026, 11, 28, 1, 2, 3, tzinfo=UTC)
    one = store.VersionInfo("v000001", created, "a.yaml", 1, "", current=True)
    two = store.VersionInfo("v000002", created, "b.yaml", 2, "", current=False)
    assert str(one) == "* v000001  2026-11-28 01:02:03Z        1 route   a.yaml"
    assert str(two) == "  v000002  2026-11-28 01:02:03Z        2 routes  b.yaml"


def test_a_seed_never_writes_over_a_kept_version_when_the_counter_is_behind(
        client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    # The counter lost (evicted by an allkeys-* maxmemory policy, deleted in a clean-up,
    # keys restored without it): the next seed took v000001 again and wrote over it, the
    # current version, with the expiry of an unpublished one; had it died before its switch,
    # the current version would have changed content and vanished an hour later.
    for g in (1, 2, 3):
        publish(client, generation_table(g))
    rollback(client, "v000001")
    client.delete(Keys().counter)
    kept = {v: client.hgetall(Keys().version(v)) for v in ("v000001", "v000002", "v000003")}

    publish_dying_before_its_switch(client, generation_table(4), monkeypatch)
    assert {v: client.hgetall(Keys().version(v)) for v in kept} == kept
    assert client.ttl(Keys().version("v000001")) == -1
    assert load_current(client) == ("v000001", generation_table(1))
    # The next seed takes the next free id: v000004 is the dead seed's (it expires).
    assert publish(client, generation_table(5)) == "v000005"
    assert rollback(client, "v000002") == "v000002"
    assert load_current(client) == ("v000002", generation_table(2))


def test_the_write_of_a_version_refuses_an_id_taken_meanwhile(client: redis.Redis) -> None:
    # Two seeds given one id (a counter set back while they ran): the second write leaves
    # the first seed's version as it is, and the seed tries the next id.
    publish(client, generation_table(1))
    before = client.hgetall(Keys().version("v000001"))
    write = client.register_script(store._WRITE_LUA)
    assert write(keys=[Keys().version("v000001")], args=[60, "data", b"other"]) == 0
    assert client.hgetall(Keys().version("v000001")) == before
    assert client.ttl(Keys().version("v000001")) == -1


def publish_dying_before_its_switch(client: redis.Redis, table: RoutingTable,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A seed that loses Redis between writing its version and switching to it."""
    def connection_lost(*args: object, **kwargs: object) -> None:
        raise redis.ConnectionError("connection lost")

    monkeypatch.setattr(store, "_switch", connection_lost)
    with pytest.raises(redis.ConnectionError):
        publish(client, table)
    monkeypatch.undo()


def test_a_switch_whose_answer_is_lost_says_it_may_have_been_made(
        client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    # The answer lost after the switch ran (a Redis that stalled past the socket timeout):
    # the seed said "cannot reach Redis ... Start Redis", and the version was current.
    first = publish(client, generation_table(1))
    real = store._switch_script

    def switched_then_lost(c: redis.Redis) -> object:
        script = real(c)

        def run(**kwargs: object) -> object:
            script(**kwargs)
            raise redis.TimeoutError("Timeout reading from 127.0.0.1:6379")
        return run

    monkeypatch.setattr(store, "_switch_script", switched_then_lost)
    with pytest.raises(SwitchNotConfirmed) as seeded:
        publish(client, generation_table(2))
    assert "did not confirm the switch to version v000002" in str(seeded.value)
    assert "may have been made" in str(seeded.value) and "versions" in str(seeded.value)
    with pytest.raises(SwitchNotConfirmed, match=f"switch to version {first}"):
        rollback(client)
    monkeypatch.undo()
    assert store.current_version(client) == first  # the rollback's switch was made too


def test_a_switch_refused_a_connection_says_nothing_was_changed(
        client: redis.Redis, redis_proc: RedisProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    # Redis refusing the connection of the switch: the switch was never sent, and the seed
    # said it "may have been made, now or once Redis gets to it".
    publish(client, generation_table(1))
    real = store._switch_script

    def refused(c: redis.Redis) -> object:
        script = real(c)

        def run(**kwargs: object) -> object:
            redis_proc.kill()
            c.connection_pool.disconnect()  # (the next command connects anew: refused)
            return script(**kwargs)
        return run

    monkeypatch.setattr(store, "_switch_script", refused)
    with pytest.raises(redis.ConnectionError) as seeded:
        publish(client, generation_table(2))
    assert not isinstance(seeded.value, SwitchNotConfirmed)  # the CLI: "cannot reach Redis"


def test_a_seed_running_beside_another_never_sets_the_counter_back(
        client: redis.Redis, caplog: pytest.LogCaptureFixture) -> None:
    # The counter was read back after its INCR in a second round trip: a newer version
    # another seed had switched to meanwhile looked like a counter left behind, and the
    # "repair" set the shared counter back, under an id a third seed had taken (with a false
    # WARNING, and readers later told that Redis had lost its data).
    publish(client, generation_table(1))
    original = client.zrevrange
    taken: list[int] = []

    def meanwhile(*args: object, **kwargs: object) -> object:
        if not taken:
            taken.append(0)
            publish(client, generation_table(3))  # another seed, quicker: v000003
            taken[0] = int(client.incr(Keys().counter))  # a third one takes an id, writing
        return original(*args, **kwargs)

    client.zrevrange = meanwhile  # type: ignore[method-assign]
    with caplog.at_level("WARNING"):
        mine = publish(client, generation_table(2))
    client.zrevrange = original  # type: ignore[method-assign]
    if taken:  # (the check ran in Python, the old way)
        assert version_number(mine) != taken[0]
        assert int(client.get(Keys().counter)) >= taken[0]
    assert "behind" not in caplog.text
    assert mine == "v000002"


def test_a_member_of_another_program_in_the_versions_set_stops_neither_seed_nor_rollback(
        client: redis.Redis) -> None:
    # "foo" (no version id) in the set of kept versions: the seed switched to its version,
    # then pruning raised ValueError (a traceback, exit 1, "nothing written"); `rollback`
    # refused for ever with "not a version id: 'foo'".
    client.zadd(Keys().versions, {"foo": 3})
    first = publish(client, generation_table(1))
    assert store.current_version(client) == first
    client.delete(Keys().history)  # (as a version seeded before the history was kept)
    second = publish(client, generation_table(2), keep=1)
    assert store.current_version(client) == second
    assert rollback(client) == first
    assert prune(client, 1) == []
