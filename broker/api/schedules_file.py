"""The declarative `--schedules` file: read, checked, and reconciled with the stored schedules.

The file (YAML or TOML) lists schedules by name. It is read and validated
before the broker starts (a bad entry stops the start with an error naming
it), then reconciled with the stored schedules by the ticker: missing ones
are created, changed ones updated, equal ones left alone (again whenever the
ticker restarts, which is harmless: equal ones stay alone). Schedules absent
from the file are not touched, and neither is a schedule's pause state. Two
replicas reconciling the same file at once cannot duplicate a schedule: the
name is unique in the database and creation is an insert-if-absent.

    schedules:
      - name: nightly-report
        description: Build the nightly report
        cron: "30 2 * * *"           # or: every: 15m   or: at: 2030-01-01T09:00:00Z
                                     # or: rrule: "FREQ=MONTHLY;BYDAY=-1FR;BYHOUR=17"
        time_zone: Europe/Berlin
        start_time: 2026-01-01T00:00:00Z
        end_time: 2027-01-01T00:00:00Z
        jitter: 30s
        exclude: [2026-12-25, 2026-12-31..2027-01-01]   # dates in time_zone
        misfire_grace: 5m
        catchup: one                 # skip | one | all
        catchup_limit: 10
        overlap: skip                # skip | buffer_one | allow_all
        max_instances: 1
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
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf import json_format, struct_pb2

from broker import config_file
from broker.api import schedule_convert as sc
from broker.api.runtime import Runtime
from broker.config import Settings
from broker.core import cron
from broker.core import schedules as core
from broker.engine.schedule_ops import Inserted, InsertSchedule, ReplaceSchedule
from broker.errors import ConfigError, InvalidArgument
from broker.store import schedules as store
from taskyard.v1 import schedule_pb2, task_pb2

log = logging.getLogger("taskyard.schedules")
V = TypeVar("V")
Table = dict[object, object]  # a YAML or TOML table, keys not yet checked

_ENTRY_KEYS = {
    "name", "description", "cron", "every", "at", "rrule", "time_zone", "start_time",
    "end_time", "jitter", "exclude", "misfire_grace", "catchup", "catchup_limit", "overlap",
    "max_instances", "task",
}  # fmt: skip
_TRIGGERS = ("cron", "every", "at", "rrule")
_TASK_KEYS = {
    "type", "queue", "priority", "payload", "labels", "max_attempts", "retry", "timeouts",
    "concurrency_key",
}  # fmt: skip
_RETRY_KEYS = {
    "max_attempts", "strategy", "initial_backoff", "backoff_coefficient", "max_backoff",
    "jitter", "non_retryable_error_types", "retryable_error_types", "max_lease_losses",
}  # fmt: skip
_TIMEOUT_KEYS = {"execution", "heartbeat", "soft", "expiry"}
_CATCHUP = {
    "skip": schedule_pb2.CATCHUP_POLICY_SKIP,
    "one": schedule_pb2.CATCHUP_POLICY_ONE,
    "all": schedule_pb2.CATCHUP_POLICY_ALL,
}
_OVERLAP = {
    "skip": schedule_pb2.OVERLAP_POLICY_SKIP,
    "buffer_one": schedule_pb2.OVERLAP_POLICY_BUFFER_ONE,
    "allow_all": schedule_pb2.OVERLAP_POLICY_ALLOW_ALL,
}
_STRATEGY = {
    "fixed": task_pb2.BACKOFF_STRATEGY_FIXED,
    "linear": task_pb2.BACKOFF_STRATEGY_LINEAR,
    "exponential": task_pb2.BACKOFF_STRATEGY_EXPONENTIAL,
}


@dataclass(frozen=True, slots=True)
class Declared:
    where: str  # "FILE: schedules[2] (nightly)", for messages
    schedule: schedule_pb2.Schedule


# --- Reading the file -----------------------------------------------------------------------


def load(path: str | None, *, settings: Settings, factory: sc.Factory, now: int) -> list[Declared]:
    """The file's schedules, each checked as CreateSchedule would (ConfigError if one fails)."""
    entries = _entries(path) if path else []
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


def _entries(path: str) -> list[object]:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read schedules file {path}: {exc}") from None
    try:
        if path.endswith(".toml"):
            data: object = tomllib.loads(text)
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


def _schedule(value: object, where: str) -> schedule_pb2.Schedule:
    entry = _table(value, _ENTRY_KEYS, where)
    out = schedule_pb2.Schedule(
        name=_str(entry.get("name", ""), f"{where}.name"),
        description=_str(entry.get("description", ""), f"{where}.description"),
    )
    triggers = [k for k in _TRIGGERS if k in entry]
    if len(triggers) != 1:
        raise ConfigError(f"{where}: give exactly one of cron, every, at and rrule")
    spec = out.spec
    if "cron" in entry:
        spec.cron.expression = _str(entry["cron"], f"{where}.cron")
    elif "rrule" in entry:
        spec.recurrence.rule = _str(entry["rrule"], f"{where}.rrule")
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
    exclude = entry.get("exclude", [])
    if not isinstance(exclude, list):
        raise ConfigError(f"{where}.exclude: expected a list of dates or FIRST..LAST ranges")
    for index, item in enumerate(exclude):
        first, last = _date_range(item, f"{where}.exclude[{index}]")
        spec.exclusions.add(start_date=first, end_date=last)
    _policies(out.policies, entry, where)
    if "task" not in entry:
        raise ConfigError(f"{where}: task is required (at least task.type)")
    out.task.CopyFrom(_task(entry["task"], f"{where}.task"))
    return out


def _policies(out: schedule_pb2.SchedulePolicies, entry: Table, where: str) -> None:
    if "misfire_grace" in entry:
        out.misfire_grace.FromMicroseconds(
            _duration(entry["misfire_grace"], f"{where}.misfire_grace")
        )
    if "catchup" in entry:
        out.catchup = _choice(entry["catchup"], _CATCHUP, f"{where}.catchup")
    if "catchup_limit" in entry:
        out.catchup_limit = _int(entry["catchup_limit"], f"{where}.catchup_limit")
    if "overlap" in entry:
        out.overlap = _choice(entry["overlap"], _OVERLAP, f"{where}.overlap")
    if "max_instances" in entry:
        out.max_instances = _int(entry["max_instances"], f"{where}.max_instances")


def _task(value: object, where: str) -> task_pb2.Task:
    entry = _table(value, _TASK_KEYS, where)
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
    labels = _table(entry.get("labels", {}), None, f"{where}.labels")
    out.labels.update({str(k): str(v) for k, v in labels.items()})
    _retry(out.retry_policy, entry.get("retry", {}), f"{where}.retry")
    timeouts = _table(entry.get("timeouts", {}), _TIMEOUT_KEYS, f"{where}.timeouts")
    for key, span in timeouts.items():
        getattr(out.timeouts, str(key)).FromMicroseconds(_duration(span, f"{where}.timeouts.{key}"))
    return out


def _retry(out: task_pb2.RetryPolicy, table: object, where: str) -> None:
    for name, value in _table(table, _RETRY_KEYS, where).items():
        key = str(name)  # one of _RETRY_KEYS
        at = f"{where}.{key}"
        if key in ("initial_backoff", "max_backoff"):
            getattr(out, key).FromMicroseconds(_duration(value, at))
        elif key == "strategy":
            out.strategy = _choice(value, _STRATEGY, at)
        elif key in ("backoff_coefficient", "jitter"):
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise ConfigError(f"{at}: expected a number, got {value!r}")
            setattr(out, key, float(value))
        elif key in ("non_retryable_error_types", "retryable_error_types"):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ConfigError(f"{at}: expected a list of strings")
            getattr(out, key).extend(value)
        else:
            setattr(out, key, _int(value, at))


def _table(value: object, allowed: set[str] | None, where: str) -> Table:
    """`value` as a table, with no key outside `allowed` (None: any key)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown = set(value) - allowed if allowed is not None else set()
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(allowed or ())}"
        )
    return value


def _str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _int(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    return value


def _choice(value: object, names: dict[str, V], where: str) -> V:
    if not isinstance(value, str) or value.lower() not in names:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(names)}")
    return names[value.lower()]


def _date_range(value: object, where: str) -> tuple[str, str]:
    """`2026-12-25` or `2026-12-24..2026-12-26` (YAML may already have parsed a date)."""
    if isinstance(value, date) and not isinstance(value, datetime):
        return value.isoformat(), value.isoformat()
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a date such as 2026-12-25, got {value!r}")
    first, _, last = value.partition("..")
    return first.strip(), (last or first).strip()


def _duration(value: object, where: str) -> int:
    return config_file.parse_duration(str(value), where)


def _instant(value: object, where: str) -> int:
    """An ISO 8601 instant with a zone (YAML may already have parsed it)."""
    when: object = value
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


def _jsonable(value: object) -> Any:  # JSON, for json_format.ParseDict
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


# --- Reconciling ----------------------------------------------------------------------------


class Reconciler:
    """Creates, updates or leaves alone each declared schedule; the ticker runs it at its start.

    The runtime gives it what a servicer has: settings, clock, database,
    committer, and the ticker's alarm (`schedule_hint`) to ring when a schedule
    it writes fires sooner than the ticker knows.
    """

    def __init__(self, declared: list[Declared], *, runtime: Runtime, factory: sc.Factory) -> None:
        self._declared = declared
        self._rt = runtime
        self._factory = factory

    async def __call__(self) -> None:
        tally = {"created": 0, "updated": 0, "unchanged": 0}
        for item in self._declared:
            wanted = _record(
                item.schedule, self._rt.settings, self._factory, self._rt.clock.now_us()
            )
            tally[await self._one(wanted)] += 1
        log.info(
            "schedules file: %d created, %d updated, %d unchanged",
            tally["created"],
            tally["updated"],
            tally["unchanged"],
        )

    async def _one(self, wanted: core.ScheduleRecord) -> str:
        rt = self._rt
        for _ in range(20):
            async with rt.db.reader.connect() as conn:
                before = await store.get_schedule(conn, wanted.name)
            if before is None:
                inserted = await rt.committer.submit(InsertSchedule(wanted, rt.schedule_hint))
                if inserted is Inserted.INSERTED:
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
                now=rt.clock.now_us(),
            )
            if await rt.committer.submit(ReplaceSchedule(before, after, rt.schedule_hint)):
                return "updated"
        raise RuntimeError(f"schedule {wanted.name!r} kept changing while the file was reconciled")
