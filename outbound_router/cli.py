"""``outbound-router``: the one console script (SPEC section 6).

Each subcommand is a thin translator: the work is done by ``redis_seed`` (routes file, Redis
versions), ``routing`` (decisions), ``ari_app``, ``agi`` and ``outbound_router.lab``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

from outbound_router.settings import Settings, SettingsError
from redis_seed.keys import DEFAULT_KEEP
from routing.numbers import all_digits

log = logging.getLogger("outbound_router")

EXIT_OK = 0
EXIT_INVALID = 1  # a bad routes file (explain exits 0 for every decision, INVALID too)
EXIT_ERROR = 2  # the environment is wrong: Redis unreachable, bad settings...


class CommandError(Exception):
    """An error the user can fix; the message says what to do."""


def _settings(read: Callable[[], Settings] = Settings.redis_from_env) -> Settings:
    """``read`` (``Settings.redis_from_env`` or a ``Settings.for_*``), with its error as a
    :class:`CommandError`."""
    try:
        return read()
    except SettingsError as exc:
        raise CommandError(str(exc)) from None


@contextlib.contextmanager
def _redis(settings: Settings) -> Iterator[Any]:
    """A client that answered PING; any Redis error inside becomes a :class:`CommandError`
    saying what went wrong and what to do (never a traceback)."""
    import redis

    from redis_seed.connection import close_client, sync_client

    client = sync_client(settings.redis_url)
    try:
        client.ping()
        yield client
    except (redis.RedisError, OSError) as exc:
        raise CommandError(redis_problem(exc, settings)) from None
    finally:
        close_client(client)  # with its Sentinel connections, if any


def redis_problem(exc: Exception, settings: Settings) -> str:
    from redis_seed.advice import redis_problem as problem

    return problem(exc, settings.redis_url, settings.redis_prefix)


def _load_file(path: str, *, report: TextIO | None = None) -> Any:
    """The validated table, or exit 1 with one ``FILE:LINE: message`` line per problem and
    nothing else (SPEC's form: a last line saying that nothing was written, which has no line,
    broke it; exit 1 says so). The lines go to ``report``: stderr, as errors of a command
    that needed the file, or stdout for ``validate``, whose report they are (as a
    linter's)."""
    from redis_seed.errors import RoutesFileError
    from redis_seed.routes_file import load_routes_file

    report = report or sys.stderr
    try:
        return load_routes_file(path)
    except RoutesFileError as exc:
        for problem in exc.problems:
            print(problem, file=report)
        raise SystemExit(EXIT_INVALID) from None


def at_least_one(text: str) -> int:
    """An argparse type: a whole number >= 1."""
    if not all_digits(text) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, not {text!r}")
    return int(text)


# -- subcommands ---------------------------------------------------------------------------

def cmd_validate(args: argparse.Namespace) -> int:
    from redis_seed.routes_file import notes

    table = _load_file(args.file, report=sys.stdout)
    for note in notes(table):
        print(f"{args.file}: note: {note}")
    counts = ", ".join(_count(n, what) for n, what in (
        (len(table.routes), "route"), (len(table.carriers), "carrier"),
        (len(table.patterns), "pattern"), (len(table.groups), "group")))
    print(f"{args.file}: OK ({counts})")
    return EXIT_OK


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def cmd_seed(args: argparse.Namespace) -> int:
    from redis_seed.errors import VersionStoreError
    from redis_seed.keys import Keys
    from redis_seed.routes_file import notes
    from redis_seed.store import current_version, eviction_risk, publish, unreplicated

    table = _load_file(args.file)
    for note in notes(table):
        print(f"outbound-router seed: note: {args.file}: {note}", file=sys.stderr)
    settings = _settings()
    keys = Keys(settings.redis_prefix)
    with _redis(settings) as client:
        try:
            if args.if_empty and (current := current_version(client, keys=keys)) is not None:
                print(f"outbound-router seed: Redis holds routes (version {current} is current "
                      f"under REDIS_PREFIX {settings.redis_prefix!r}); {args.file} not "
                      "seeded (--if-empty)", file=sys.stderr)
                print(current)
                return EXIT_OK
            # (a file name that is no UTF-8 is stored with its odd bytes replaced)
            source = os.fsencode(args.file).decode("utf-8", "replace")
            version = publish(client, table, source=source,
                              keep=DEFAULT_KEEP if args.keep is None else args.keep,
                              keys=keys)
        except VersionStoreError as exc:
            raise CommandError(str(exc)) from None
        lagging = unreplicated(client)
        risk = eviction_risk(client)
    for warning in (lagging, risk):
        if warning:
            print(f"outbound-router seed: warning: {warning}", file=sys.stderr)
    print(version)
    return EXIT_OK


def cmd_versions(args: argparse.Namespace) -> int:
    from redis_seed.errors import VersionStoreError
    from redis_seed.keys import Keys
    from redis_seed.store import current_gone, current_version, list_versions

    settings = _settings()
    keys = Keys(settings.redis_prefix)
    with _redis(settings) as client:
        try:
            infos = list_versions(client, keys=keys)  # marks the current one, when it is kept
            current = None if any(info.current for info in infos) else current_version(
                client, keys=keys)
        except VersionStoreError as exc:
            raise CommandError(str(exc)) from None
    if not infos and current is None:
        print(f"no versions in Redis under REDIS_PREFIX {settings.redis_prefix!r} yet: run "
              "'outbound-router seed FILE'", file=sys.stderr)
        return EXIT_OK
    for info in infos:
        print(info)
    if current is not None:
        # Routers that start now route with the newest kept version (redis_seed/reader.py).
        print(current_gone(current), file=sys.stderr)
    return EXIT_OK


def cmd_rollback(args: argparse.Namespace) -> int:
    from redis_seed.errors import VersionStoreError
    from redis_seed.keys import Keys
    from redis_seed.store import rollback, unreplicated

    settings = _settings()
    with _redis(settings) as client:
        try:
            version = rollback(client, args.version, keys=Keys(settings.redis_prefix))
        except (VersionStoreError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        lagging = unreplicated(client)
    if lagging:
        print(f"outbound-router rollback: warning: {lagging}", file=sys.stderr)
    print(version)
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    from routing.explain import to_json, to_text
    from routing.plan import select
    from routing.snapshot import Snapshot

    if args.config is not None:  # --config "" is an empty file name, not no file
        snapshot = Snapshot.build(_load_file(args.config), f"file:{args.config}")
    else:
        from redis_seed.errors import VersionStoreError
        from redis_seed.keys import Keys
        from redis_seed.store import load_current

        settings = _settings()
        with _redis(settings) as client:
            try:
                version, table = load_current(client, keys=Keys(settings.redis_prefix))
            except VersionStoreError as exc:
                raise CommandError(f"{exc} (or pass --config FILE)") from None
        snapshot = Snapshot.build(table, version)
    selection = select(snapshot, args.number, args.tenant)
    if args.json:
        print(json.dumps(to_json(selection, snapshot)))
    else:
        print(to_text(selection, snapshot, args.number, args.tenant))
    # a decision was made (OK, NO_ROUTE, BLOCKED or INVALID are all answers): exit 0
    return EXIT_OK


def cmd_ari(args: argparse.Namespace) -> int:
    from ari_app.main import run

    return int(run(_settings(Settings.for_ari)))


def cmd_agi(args: argparse.Namespace) -> int:
    from agi.main import run

    return int(run(_settings(Settings.for_agi)))


# -- parser --------------------------------------------------------------------------------

def _version() -> str:
    """The installed package's version (a checkout run without installing has none)."""
    try:
        return importlib.metadata.version("outbound-router")
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


_EPILOG = """\
environment:
  REDIS_URL      redis://, rediss://, unix://, redis+sentinel:// or rediss+sentinel://
                 (default redis://127.0.0.1:6379/0)
  REDIS_PREFIX   the keys' prefix (default outbound-router)
  ARI_URL, ARI_USERNAME, ARI_PASSWORD, ARI_APP
                 the `ari` service's (default http://127.0.0.1:8088, app outbound-router)
  AGI_LISTEN, AGI_ALLOW
                 the `agi` service's (default 127.0.0.1:4573; AGI_ALLOW: peers allowed)
  ROUTES_CACHE   `ari` and `agi`: a file keeping the last routing version loaded, to route
                 with when the service starts while Redis has none for it

exit status: 0 done (explain: whatever the decision); 1 a bad routes file, nothing
written; 2 the environment is wrong (Redis, a setting, an unknown version), or a usage
error (lab status: 3 when Asterisk is down); one line on stderr says what to do. See
README.md and docs/.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="outbound-router",
        description="Outbound call routing for Asterisk: priorities, weights and failover.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check a routes file",
                       description="Check a routes file: exit 0, or exit 1 with a FILE:LINE: "
                                   "message line on stdout for every problem found (FILE: "
                                   "message for one about the whole file, such as a missing "
                                   "file).")
    p.add_argument("file", help="the routes file (YAML; README.md, 'The routes file')")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("seed", help="validate a routes file and publish it to Redis",
                       description="Validate a routes file and publish it to Redis (REDIS_URL) "
                                   "as a new current version; print the version. A bad file "
                                   "writes nothing: exit 1 with validate's FILE:LINE: message "
                                   "lines, on stderr here.")
    p.add_argument("file", help="the routes file (YAML; README.md, 'The routes file')")
    p.add_argument("--keep", type=at_least_one, default=None, metavar="N",
                   help=f"versions kept in Redis, older ones are removed (default: "
                        f"{DEFAULT_KEEP})")
    p.add_argument("--if-empty", action="store_true",
                   help="publish only when Redis holds no current version (a first start's "
                        "routes: never replaces what an operator seeded); else print the "
                        "current version. The file is validated either way")
    p.set_defaults(func=cmd_seed)

    p = sub.add_parser("versions", help="list the versions kept in Redis",
                       description="The versions kept in Redis (REDIS_URL, REDIS_PREFIX), one "
                                   "a line, oldest first; '*' marks the current one.")
    p.set_defaults(func=cmd_versions)

    p = sub.add_parser("rollback", help="make an older version current again")
    p.add_argument("version", nargs="?", default=None,
                   help="version id (default: one step back in the history of switches, "
                        "the version current before the last seed or rollback)")
    p.set_defaults(func=cmd_rollback)

    p = sub.add_parser("explain", help="show the routing decision for a number")
    p.add_argument("number", help="the dialled number, as the dialplan passes it")
    p.add_argument("--tenant", default=None, help="the caller's tenant (default: none)")
    p.add_argument("--config", metavar="FILE", help="use a routes file instead of Redis")
    p.add_argument("--json", action="store_true",
                   help="one JSON object: status, number, tiers [{priority, routes [{route, "
                        "carrier, metric, share}]}]")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("ari", help="run the Stasis (ARI) application",
                       description="Run the Stasis application ARI_APP against ARI_URL with "
                                   "ARI_USERNAME and ARI_PASSWORD (an ari.conf user), routing "
                                   "with the current version in Redis (REDIS_URL, "
                                   "REDIS_PREFIX). Until SIGTERM or SIGINT. See docs/ari.md.")
    p.set_defaults(func=cmd_ari)

    p = sub.add_parser("agi", help="run the FastAGI server",
                       description="Serve FastAGI on AGI_LISTEN (only to the peers of "
                                   "AGI_ALLOW, when set), routing with the current version in "
                                   "Redis (REDIS_URL, REDIS_PREFIX). Until SIGTERM or SIGINT. "
                                   "See docs/agi.md.")
    p.set_defaults(func=cmd_agi)

    from outbound_router import lab

    lab.register(sub)
    return parser


def _tenant_values_kept(argv: Sequence[str]) -> list[str]:
    """``--tenant -acme`` as ``--tenant=-acme``: argparse takes a value that starts with '-'
    for an option and stops with a usage error, where the dialplan passes such a tenant on
    (a value that starts with '--' is left alone: more likely an option after a missing
    value)."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--tenant" and arg.startswith("-") and not arg.startswith("--"):
            out[-1] = f"--tenant={arg}"
        else:
            out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(_tenant_values_kept(sys.argv[1:] if argv is None else argv))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        status = int(args.func(args))
        sys.stdout.flush()  # here, where a closed pipe is caught, rather than at exit
        return status
    except CommandError as exc:
        print(f"outbound-router {args.command}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        if args.command in ("ari", "agi"):  # a service's socket, not its (unused) stdout
            raise
        # `outbound-router versions | head`: the reader left. No traceback, and none at exit
        # either, when Python flushes stdout into the closed pipe.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports a command that died of it


if __name__ == "__main__":
    sys.exit(main())
