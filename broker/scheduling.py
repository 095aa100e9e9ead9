"""Schedules in the running broker: the ticker's parts, and the declarative `--schedules` file.

The file (YAML or TOML) lists schedules by name. It is read and validated
before the broker starts (a bad entry stops the start with an error naming
it), then reconciled with the stored schedules by the ticker: missing ones
are created, changed ones updated, equal ones left alone. Schedules absent
from the file are not touched, and neither is a schedule's pause state. Two
replicas reconciling the same file at once cannot duplicate a schedule: the
name is unique in the database and creation is an insert-if-absent.

    schedules:
      - name: nightly-report
        description: Build the nightly report
        cron: "30 2 * * *"           # or: every: 15m   or: at: 2030-01-01T09:00:00Z
        time_zone: Europe/Berlin
        start_time: 2026-01-01T00:00:00Z
        end_time: 2027-01-01T00:00:00Z
        jitter: 30s
        misfire_grace: 5m
        catchup: one                 # skip | one | all
        catchup_limit: 10
        overlap: skip                # skip | buffer_one | allow_all
        task:
          type: report.build
          queue: reports
          priority: 5
          payload: {"format": "pdf"}
          labels: {team: data}
          concurrency_key: reports
          retry: {max_attempts: 5, initial_backoff: 10s}
          timeouts: {execution: 1h}
"""

from __future__ import annotations

import logging
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import json_format, struct_pb2

from broker import config_file
from broker.api import schedule_convert as sc
from broker.clock import Clock
from broker.config import Settings
from broker.core import cron
from broker.core import schedules as core
from broker.core.options import Defaults, TaskOptions
from broker.errors import ConfigError, InvalidArgument
from broker.loops.committer import Committer
from broker.loops.schedule_ops import InsertSchedule, ReplaceSchedule
from broker.loops.ticker import Ticker
from broker.store import schedules as store
from broker.store.database import Database
from taskyard.v1 import schedule_pb2, task_pb2

log = logging.getLogger("taskyard.schedules")

_ENTRY_KEYS = {
    "name", "description", "cron", "every", "at", "time_zone", "start_time", "end_time",
    "jitter", "misfire_grace", "catchup", "catchup_limit", "overlap", "task",
}  # fmt: skip
_TASK_KEYS = {
    "type", "queue", "priority", "payload", "labels", "max_attempts", "retry", "timeouts",
    "concurrency_key",
}  # fmt: skip
_RETRY_KEYS = {
    "max_attempts", "strategy", "initial_backoff", "backoff_coefficient", "max_backoff",
    "jitter", "non_retryable_error_types", "max_lease_losses",
}  # fmt: skip
_TIMEOUT_KEYS = {"execution", "heartbeat", "soft", "expiry"}
_CATCHUP = {"skip": 1, "one": 2, "all": 3}
_OVERLAP = {"skip": 1, "buffer_one": 2, "allow_all": 3}


@dataclass(frozen=True, slots=True)
class Declared:
    where: str  # "FILE: schedules[2] (nightly)", for messages
    schedule: schedule_pb2.Schedule


def build_ticker(
    *,
    settings: Settings,
    defaults: Defaults,
    clock: Clock,
    db: Database,
    committer: Committer,
    queue_options: Callable[[str], TaskOptions] | None,
) -> Ticker:
    """The ticker, with the --schedules file read and checked (ConfigError if it is bad)."""
    factory = sc.Factory(settings, defaults, queue_options)
    now = clock.now_us()
    path = getattr(settings, "schedules_path", None)
    declared = load(path, settings=settings, factory=factory, now=now) if path else []
    ticker = Ticker(
        db=db,
        committer=committer,
        clock=clock,
        factory=factory,
        poll_interval_s=settings.promote_poll_s,
    )
    if declared:

        async def reconcile_file() -> None:
            await reconcile(
                declared, settings=settings, factory=factory, db=db, committer=committer,
                clock=clock, hint=ticker.hint,
            )  # fmt: skip

        ticker.reconcile = reconcile_file
    return ticker


# --- Reading the file -----------------------------------------------------------------------


def load(path: str, *, settings: Settings, factory: sc.Factory, now: int) -> list[Declared]:
    entries = _entries(path)
    out: list[Declared] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        label = entry.get("name") if isinstance(entry, dict) else None
        where = f"{path}: schedules[{index}]" + (f" ({label})" if label else "")
        try:
            schedule = _schedule(entry, where)
            record = _record(schedule, settings, factory, now)
        except InvalidArgument as error:
            raise ConfigError(f"{where}: {error.message}") from None
        if record.name in seen:
            raise ConfigError(f"{where}: the name {record.name!r} is declared twice")
        seen.add(record.name)
        out.append(Declared(where, schedule))
    return out


def _entries(path: str) -> list[Any]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read schedules file {path}: {exc}") from None
    try:
        if path.endswith(".toml"):
            data: Any = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:
        raise ConfigError(f"schedules file {path} is not valid YAML or TOML: {exc}") from None
    if data is None:
        return []
    if not isinstance(data, dict) or set(data) - {"schedules"}:
        raise ConfigError(f"{path}: expected one top-level key, `schedules`, holding a list")
    entries = data.get("schedules") or []
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: `schedules` must be a list of tables")
    return entries


def _record(
    s: schedule_pb2.Schedule, settings: Settings, factory: sc.Factory, now: int
) -> core.ScheduleRecord:
    record = sc.new_record(
        sc.schedule_name(s.name, settings),
        sc.description_in(s.description),
        sc.spec_in(s.spec, now=now),
        sc.policies_in(s.policies),
        sc.template_in(s.task, settings),
        now=now,
    )
    factory.check(record, now)
    return record


def _schedule(entry: Any, where: str) -> schedule_pb2.Schedule:
    _only(entry, _ENTRY_KEYS, where)
    out = schedule_pb2.Schedule(
        name=_str(entry.get("name", ""), f"{where}.name"),
        description=_str(entry.get("description", ""), f"{where}.description"),
    )
    triggers = [k for k in ("cron", "every", "at") if k in entry]
    if len(triggers) != 1:
        raise ConfigError(f"{where}: give exactly one of cron, every and at")
    spec = out.spec
    if "cron" in entry:
        spec.cron.expression = _str(entry["cron"], f"{where}.cron")
    elif "every" in entry:
        spec.interval.every.FromMicroseconds(_duration(entry["every"], f"{where}.every"))
    else:
        spec.once.fire_time.FromMicroseconds(_instant(entry["at"], f"{where}.at"))
    spec.time_zone = _str(entry.get("time_zone", ""), f"{where}.time_zone")
    for key in ("start_time", "end_time"):
        if key in entry:
            getattr(spec, key).FromMicroseconds(_instant(entry[key], f"{where}.{key}"))
    if "jitter" in entry:
        spec.jitter.FromMicroseconds(_duration(entry["jitter"], f"{where}.jitter"))
    _policies(out.policies, entry, where)
    if "task" not in entry:
        raise ConfigError(f"{where}: task is required (at least task.type)")
    out.task.CopyFrom(_task(entry["task"], f"{where}.task"))
    return out


def _policies(out: schedule_pb2.SchedulePolicies, entry: dict[str, Any], where: str) -> None:
    if "misfire_grace" in entry:
        out.misfire_grace.FromMicroseconds(
            _duration(entry["misfire_grace"], f"{where}.misfire_grace")
        )
    if "catchup" in entry:
        out.catchup = _choice(entry["catchup"], _CATCHUP, f"{where}.catchup")  # type: ignore[assignment]
    if "catchup_limit" in entry:
        out.catchup_limit = _int(entry["catchup_limit"], f"{where}.catchup_limit")
    if "overlap" in entry:
        out.overlap = _choice(entry["overlap"], _OVERLAP, f"{where}.overlap")  # type: ignore[assignment]


def _task(entry: Any, where: str) -> task_pb2.Task:
    _only(entry, _TASK_KEYS, where)
    out = task_pb2.Task(
        type=_str(entry.get("type", ""), f"{where}.type"),
        queue=_str(entry.get("queue", ""), f"{where}.queue"),
        priority=_int(entry.get("priority", 0), f"{where}.priority"),
        max_attempts=_int(entry.get("max_attempts", 0), f"{where}.max_attempts"),
        concurrency_key=_str(entry.get("concurrency_key", ""), f"{where}.concurrency_key"),
    )
    if "payload" in entry:
        value = struct_pb2.Value()
        json_format.ParseDict(_jsonable(entry["payload"]), value)
        out.payload.json.CopyFrom(value)
    labels = entry.get("labels", {})
    _only(labels, None, f"{where}.labels")
    out.labels.update({str(k): str(v) for k, v in labels.items()})
    _retry(out.retry_policy, entry.get("retry", {}), f"{where}.retry")
    timeouts = entry.get("timeouts", {})
    _only(timeouts, _TIMEOUT_KEYS, f"{where}.timeouts")
    for key, value in timeouts.items():
        getattr(out.timeouts, key).FromMicroseconds(_duration(value, f"{where}.timeouts.{key}"))
    return out


def _retry(out: task_pb2.RetryPolicy, table: Any, where: str) -> None:
    _only(table, _RETRY_KEYS, where)
    for key, value in table.items():
        at = f"{where}.{key}"
        if key in ("initial_backoff", "max_backoff"):
            getattr(out, key).FromMicroseconds(_duration(value, at))
        elif key == "strategy":
            names = {"fixed": 1, "linear": 2, "exponential": 3}
            out.strategy = _choice(value, names, at)  # type: ignore[assignment]
        elif key in ("backoff_coefficient", "jitter"):
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ConfigError(f"{at}: expected a number, got {value!r}")
            setattr(out, key, float(value))
        elif key == "non_retryable_error_types":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{at}: expected a list of strings")
            out.non_retryable_error_types.extend(value)
        else:
            setattr(out, key, _int(value, at))


def _only(table: Any, allowed: set[str] | None, where: str) -> None:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = set(table) - allowed if allowed is not None else set()
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed or ())}"
        )


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    return value


def _choice(value: Any, names: dict[str, int], where: str) -> int:
    if not isinstance(value, str) or value.lower() not in names:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(names)}")
    return names[value.lower()]


def _duration(value: Any, where: str) -> int:
    return config_file.parse_duration(value, where)


def _instant(value: Any, where: str) -> int:
    """An ISO 8601 instant with a zone (YAML may already have parsed it)."""
    when = value
    if isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"{where}: {value!r} is not an ISO 8601 time") from None
    if not isinstance(when, datetime):
        raise ConfigError(f"{where}: expected an ISO 8601 time, got {value!r}")
    if when.tzinfo is None:
        raise ConfigError(f"{where}: {value!r} needs a zone, e.g. 2030-01-01T09:00:00Z")
    return cron.to_us(when.astimezone(UTC))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


# --- Reconciling ----------------------------------------------------------------------------


async def reconcile(
    declared: list[Declared],
    *,
    settings: Settings,
    factory: sc.Factory,
    db: Database,
    committer: Committer,
    clock: Clock,
    hint: Callable[[int | None], None],
) -> None:
    """Create, update or leave alone each declared schedule; log what changed."""
    tally = {"created": 0, "updated": 0, "unchanged": 0}
    for item in declared:
        wanted = _record(item.schedule, settings, factory, clock.now_us())
        outcome = await _reconcile_one(wanted, db=db, committer=committer, clock=clock, hint=hint)
        tally[outcome] += 1
    log.info(
        "schedules file: %d created, %d updated, %d unchanged",
        tally["created"],
        tally["updated"],
        tally["unchanged"],
    )


async def _reconcile_one(
    wanted: core.ScheduleRecord,
    *,
    db: Database,
    committer: Committer,
    clock: Clock,
    hint: Callable[[int | None], None],
) -> str:
    for _ in range(20):
        async with db.reader.connect() as conn:
            before = await store.get_schedule(conn, wanted.name)
        if before is None:
            if await committer.submit(InsertSchedule(wanted, hint)):
                return "created"
            continue  # another replica created it meanwhile: compare with theirs
        if core.same_settings(before, wanted):
            return "unchanged"
        after = core.with_settings(
            before,
            description=wanted.description,
            spec=wanted.spec,
            policies=wanted.policies,
            template=wanted.template,
            now=clock.now_us(),
        )
        if await committer.submit(ReplaceSchedule(before, after, hint)):
            return "updated"
    raise RuntimeError(f"schedule {wanted.name!r} kept changing while the file was reconciled")
