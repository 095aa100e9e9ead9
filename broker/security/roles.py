"""Who may call which RPC: the one table, and the decision for one call.

Four roles: `submitter` creates tasks and reads, watches and cancels its own;
`worker` runs the Lease stream for the queues and types it is allowed;
`operator` runs the broker (queues, schedules, retries, purges, workers,
statistics, and reads every task); `admin` may do everything. An identity
may hold several roles, and may be limited to some queues: it then acts only
on requests that name those queues (or on tasks in them). A method missing
from the table is admin-only, so a new RPC is closed until someone decides.

Pure logic: the decision may ask the caller to look a task up (owner, queue),
which `access` does against the database.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from broker.core.queues import DEFAULT_QUEUE


class Role(StrEnum):
    SUBMITTER = "submitter"
    WORKER = "worker"
    OPERATOR = "operator"
    ADMIN = "admin"


ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller, as the tokens file (or auth being off) describes it."""

    name: str
    roles: frozenset[Role]
    queues: frozenset[str] | None = None  # None: every queue
    types: frozenset[str] | None = None  # None: every task type (Lease)
    # Where it came from: "token:<id>", "certificate:<subject>", or "" when
    # authentication is off. A reload that changes the entry revokes streams.
    credential: str = ""
    identified: bool = True  # False for the anonymous caller of a broker without auth

    @property
    def owner(self) -> str | None:
        """The name recorded as the owner of tasks it creates."""
        return self.name if self.identified else None

    def describe(self) -> str:
        roles = ",".join(sorted(self.roles))
        scope = f"; queues {','.join(sorted(self.queues))}" if self.queues is not None else ""
        return f"{self.name} ({roles}{scope})"


QueuesOf = Callable[[Any], Sequence[str] | None]


@dataclass(frozen=True, slots=True)
class Scope:
    """Which queues a request touches, for identities limited to some queues.

    kind: "none" (no queue: allowed), "all" (every queue: refused to limited
    identities), "task" (the task named by `request.id`), "lease" (the hello,
    checked by `access.check_hello`), "request" (`queues_of(request)`; None
    from it means every queue).
    """

    kind: str
    queues_of: QueuesOf | None = None


NO_QUEUE = Scope("none")
ALL_QUEUES = Scope("all")
TASK = Scope("task")
LEASE = Scope("lease")


def named(field: str, default: str | None = None) -> Scope:
    """The queue is one string field of the request ("" → `default`, or every queue)."""

    def queues_of(request: Any) -> Sequence[str] | None:
        value = getattr(request, field) or default
        return [value] if value else None

    return Scope("request", queues_of)


def _task_queue(request: Any) -> Sequence[str]:
    return [request.task.queue or DEFAULT_QUEUE]


def _batch_queues(request: Any) -> Sequence[str]:
    return [r.task.queue or DEFAULT_QUEUE for r in request.requests]


def _queues_field(request: Any) -> Sequence[str] | None:
    return list(request.queues) or None


def _queue_message(request: Any) -> Sequence[str] | None:
    return [request.queue.name] if request.queue.name else None


@dataclass(frozen=True, slots=True)
class Rule:
    roles: frozenset[Role]
    scope: Scope = NO_QUEUE
    # Roles that, when they are what grants the call, act only on their own tasks.
    own: frozenset[Role] = frozenset()


_S, _W, _O, _A = Role.SUBMITTER, Role.WORKER, Role.OPERATOR, Role.ADMIN
EVERYONE = frozenset(Role)
OPERATORS = frozenset({_O, _A})


def _rule(*roles: Role, scope: Scope = NO_QUEUE, own: Sequence[Role] = ()) -> Rule:
    return Rule(frozenset({*roles, _A}), scope, frozenset(own))


_TASKS = "/taskyard.v1.TaskService/"
_WORKERS = "/taskyard.v1.WorkerService/"
_QUEUES = "/taskyard.v1.QueueService/"
_STATS = "/taskyard.v1.StatsService/"

RULES: dict[str, Rule] = {
    _TASKS + "CreateTask": _rule(_S, scope=Scope("request", _task_queue)),
    _TASKS + "BatchCreateTasks": _rule(_S, scope=Scope("request", _batch_queues)),
    _TASKS + "GetTask": _rule(_S, _O, scope=TASK, own=[_S]),
    _TASKS + "ListTasks": _rule(_S, _O, scope=named("queue"), own=[_S]),
    _TASKS + "WatchTask": _rule(_S, _O, scope=TASK, own=[_S]),
    _TASKS + "ListTaskAttempts": _rule(_S, _O, scope=TASK, own=[_S]),
    _TASKS + "ListTaskLogs": _rule(_S, _O, scope=TASK, own=[_S]),
    _TASKS + "FollowTaskLogs": _rule(_S, _O, scope=TASK, own=[_S]),
    _TASKS + "CancelTask": _rule(_S, scope=TASK, own=[_S]),
    _TASKS + "RetryTask": _rule(_O, scope=TASK),
    _TASKS + "RetryTasks": _rule(_O, scope=named("queue")),
    _TASKS + "PurgeTasks": _rule(_O, scope=named("queue")),
    _WORKERS + "Lease": _rule(_W, scope=LEASE),
    _WORKERS + "ListWorkers": _rule(_O, scope=named("queue")),
    _WORKERS + "GetWorker": _rule(_O, scope=ALL_QUEUES),
    _WORKERS + "DrainWorker": _rule(_O, scope=ALL_QUEUES),
    _QUEUES + "CreateQueue": _rule(_O, scope=Scope("request", _queue_message)),
    _QUEUES + "GetQueue": _rule(_O, scope=named("name")),
    _QUEUES + "ListQueues": _rule(_O, scope=ALL_QUEUES),
    _QUEUES + "UpdateQueue": _rule(_O, scope=Scope("request", _queue_message)),
    _QUEUES + "DeleteQueue": _rule(_O, scope=named("name")),
    _QUEUES + "PauseQueue": _rule(_O, scope=named("name")),
    _QUEUES + "ResumeQueue": _rule(_O, scope=named("name")),
    _STATS + "GetQueueStats": _rule(_O, scope=named("queue")),
    _STATS + "GetTaskStats": _rule(_O, scope=named("queue")),
    "/taskyard.v1.SystemService/GetSystemInfo": _rule(*EVERYONE),
    "/taskyard.v1.SystemService/GetCaller": _rule(*EVERYONE),
    # Submitters see their own tasks' events only; queue-limited identities
    # must name their queues (docs/events.md).
    "/taskyard.v1.EventService/WatchEvents": _rule(
        _S, _O, scope=Scope("request", _queues_field), own=[_S]
    ),
}

# Whole services: every method, including ones added later, gets this rule.
SERVICE_RULES: dict[str, Rule] = {
    # Schedules create tasks on their own, in any queue: operators only, and
    # only those not limited to some queues. Reads of schedules included.
    "/taskyard.v1.ScheduleService/": _rule(_O, scope=ALL_QUEUES),
    # Health and reflection when they are not left open (--no-open-health,
    # --no-open-reflection): any authenticated identity.
    "/grpc.health.v1.Health/": _rule(*EVERYONE),
    "/grpc.reflection.v1alpha.ServerReflection/": _rule(*EVERYONE),
    "/grpc.reflection.v1.ServerReflection/": _rule(*EVERYONE),
}

ADMIN_ONLY = Rule(frozenset({_A}), ALL_QUEUES)


def rule_for(method: str) -> Rule:
    rule = RULES.get(method)
    if rule is not None:
        return rule
    service = method[: method.rfind("/") + 1]
    return SERVICE_RULES.get(service, ADMIN_ONLY)


def is_listed(method: str) -> bool:
    """Whether the method has a rule of its own or of its service (not the fallback)."""
    return method in RULES or method[: method.rfind("/") + 1] in SERVICE_RULES


def permissions(principal: Principal, methods: Sequence[str]) -> dict[str, bool]:
    """The methods (`/pkg.Service/Method`) its roles allow → whether on its own tasks only.

    What the caller may attempt, not a promise: queue limits and task
    ownership are still decided per call (`decide`, `access`).
    """
    allowed: dict[str, bool] = {}
    for method in methods:
        rule = rule_for(method)
        granting = rule.roles & principal.roles
        if granting:
            allowed[method] = Role.ADMIN not in granting and granting <= rule.own
    return allowed


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    why: str = ""  # for a refusal: what the caller lacks
    reason: str = "ROLE_NOT_ALLOWED"  # for a refusal: the ErrorInfo reason
    # The call acts only on the caller's own tasks (reads are filtered by owner).
    own_only: bool = False
    # Look this task up first: it must be the caller's (own_only) and/or in
    # one of its queues (check_queue).
    task_id: str | None = None
    check_queue: bool = False


ALLOW = Decision(True)


def decide(principal: Principal, method: str, request: Any) -> Decision:
    """May `principal` call `method` with `request`? Task lookups are left to the caller."""
    rule = rule_for(method)
    granting = rule.roles & principal.roles
    if not granting:
        needed = " or ".join(sorted(rule.roles))
        return Decision(
            False, f"{principal.describe()} may not call {_name(method)}: {needed} only"
        )
    if Role.ADMIN in granting:
        return ALLOW
    if granting <= rule.own:
        # Its own tasks only, whatever their queue (it could create them only there).
        if rule.scope.kind != "task":
            return Decision(True, own_only=True)
        if request is None:
            return Decision(False, f"{_name(method)} needs the task it acts on")
        return Decision(True, own_only=True, task_id=request.id)
    if principal.queues is None:
        return ALLOW
    return _queue_decision(principal, principal.queues, method, rule.scope, request)


def _queue_decision(
    principal: Principal, allowed: frozenset[str], method: str, scope: Scope, request: Any
) -> Decision:
    if scope.kind in ("none", "lease"):
        return ALLOW
    if scope.kind == "task" and request is not None:
        return Decision(True, task_id=request.id, check_queue=True)
    queues = None
    if scope.queues_of is not None and request is not None:
        queues = scope.queues_of(request)
    if queues is None:
        return Decision(
            False,
            f"{principal.describe()} is limited to some queues; {_name(method)} "
            "here covers every queue (name one of yours)",
            "QUEUE_NOT_ALLOWED",
        )
    outside = sorted(set(queues) - allowed)
    if outside:
        return Decision(
            False,
            f"{principal.describe()} may not use queue {', '.join(map(repr, outside))}",
            "QUEUE_NOT_ALLOWED",
        )
    return ALLOW


def _name(method: str) -> str:
    return method.rsplit("/", 1)[-1]
