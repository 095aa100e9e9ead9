"""The pure parts: token format and hashing, the tokens file's checks, role decisions, the
rate bucket's arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.errors import ConfigError
from broker.security import roles, tokens
from broker.security.limits import SubmitRate
from broker.security.roles import Principal, Role
from taskyard.v1 import task_pb2, task_service_pb2


def _file(*entries: str) -> tokens.Credentials:
    return tokens.parse("\n".join(entries), "tokens.toml")


def _entry(name: str = "alice", roles: str = '["submitter"]', extra: str = "") -> tuple[str, str]:
    token, key_id = tokens.new_token()
    hashed = tokens.hash_secret(token.split("_", 2)[2])
    text = f'[[token]]\nid = "{key_id}"\nname = "{name}"\nroles = {roles}\nhash = "{hashed}"\n'
    return token, text + extra


def test_a_token_verifies_against_its_salted_hash_only() -> None:
    token, entry = _entry()
    credentials = _file(entry)
    principal = credentials.by_token(token)
    assert principal is not None and principal.name == "alice"
    assert credentials.by_token(token[:-1] + ("x" if token[-1] != "x" else "y")) is None
    assert credentials.by_token("tyk_ffffffffffff_" + token.split("_", 2)[2]) is None
    assert credentials.by_token("not a token") is None
    assert token.split("_", 2)[2] not in entry


def test_the_same_secret_hashes_differently_under_each_salt() -> None:
    assert tokens.hash_secret("same") != tokens.hash_secret("same")


@pytest.mark.parametrize(
    ("extra", "roles_text", "message"),
    [
        ("", '["superuser"]', "unknown roles"),
        ('queues = ["q"]\n', '["admin"]', "admin may do everything"),
        ('types = ["t"]\n', '["submitter"]', "needs the worker role"),
        ('role = "x"\n', '["submitter"]', "unknown keys"),
        ("", "[]", "non-empty list"),
    ],
)
def test_a_mistake_in_the_tokens_file_names_entry_and_key(
    extra: str, roles_text: str, message: str
) -> None:
    _, entry = _entry(roles=roles_text, extra=extra)
    with pytest.raises(ConfigError, match=message) as info:
        _file(entry)
    assert "[[token]] #1" in str(info.value)


def test_a_duplicate_id_and_a_bad_name_are_refused() -> None:
    _, entry = _entry()
    with pytest.raises(ConfigError, match="appears twice"):
        _file(entry, entry)
    _, spaced = _entry(name="has space")
    with pytest.raises(ConfigError, match="name"):
        _file(spaced)


def test_a_missing_tokens_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        tokens.load(tmp_path / "absent.toml")


def test_a_changed_entry_is_no_longer_valid_for_open_streams() -> None:
    token, entry = _entry()
    before = _file(entry)
    principal = before.by_token(token)
    assert principal is not None and before.still_valid(principal)
    changed = entry.replace('["submitter"]', '["submitter", "worker"]')
    assert not _file(changed).still_valid(principal)
    assert not _file().still_valid(principal)


SUBMITTER = Principal("alice", frozenset({Role.SUBMITTER}), credential="token:a")
SCOPED = Principal("ops", frozenset({Role.OPERATOR}), frozenset({"billing"}), credential="t:b")


def _create(queue: str) -> task_service_pb2.CreateTaskRequest:
    return task_service_pb2.CreateTaskRequest(task=task_pb2.Task(type="t", queue=queue))


def test_decisions_for_a_submitter() -> None:
    get = roles.decide(SUBMITTER, "/taskyard.v1.TaskService/GetTask", _get("01ARZ"))
    assert get.allowed and get.own_only and get.task_id == "01ARZ"
    listing = roles.decide(SUBMITTER, "/taskyard.v1.TaskService/ListTasks", None)
    assert listing.allowed and listing.own_only and listing.task_id is None
    purge = roles.decide(SUBMITTER, "/taskyard.v1.TaskService/PurgeTasks", None)
    assert (purge.allowed, purge.reason) == (False, "ROLE_NOT_ALLOWED")


def _get(task_id: str) -> task_service_pb2.GetTaskRequest:
    return task_service_pb2.GetTaskRequest(id=task_id)


def test_decisions_for_an_operator_limited_to_a_queue() -> None:
    retry = task_service_pb2.RetryTasksRequest
    allowed = roles.decide(SCOPED, "/taskyard.v1.TaskService/RetryTasks", retry(queue="billing"))
    other = roles.decide(SCOPED, "/taskyard.v1.TaskService/RetryTasks", retry(queue="default"))
    everything = roles.decide(SCOPED, "/taskyard.v1.QueueService/ListQueues", None)
    by_id = roles.decide(SCOPED, "/taskyard.v1.TaskService/GetTask", _get("01ARZ"))
    assert allowed.allowed
    assert (other.allowed, other.reason) == (False, "QUEUE_NOT_ALLOWED")
    assert (everything.allowed, everything.reason) == (False, "QUEUE_NOT_ALLOWED")
    assert by_id.allowed and by_id.check_queue and not by_id.own_only


def test_an_empty_queue_means_the_default_queue() -> None:
    billing_submitter = Principal("b", frozenset({Role.SUBMITTER}), frozenset({"default"}))
    path = "/taskyard.v1.TaskService/CreateTask"
    assert roles.decide(billing_submitter, path, _create("")).allowed
    assert not roles.decide(billing_submitter, path, _create("other")).allowed


def test_methods_nobody_listed_are_admin_only() -> None:
    assert not roles.is_listed("/taskyard.v1.NewService/Thing")
    rule = roles.rule_for("/taskyard.v1.NewService/Thing")
    assert rule.roles == frozenset({Role.ADMIN})
    assert roles.rule_for("/taskyard.v1.ScheduleService/CreateSchedule").roles == frozenset(
        {Role.OPERATOR, Role.ADMIN}
    )


def test_the_bucket_refills_at_the_rate_and_caps_at_the_burst() -> None:
    now = [0.0]
    rate = SubmitRate(rate=2.0, burst=4, clock=lambda: now[0])
    assert rate.take("a", 4) is None  # the burst
    assert rate.take("a", 1) == pytest.approx(0.5)  # one task at 2/s
    assert rate.take("b", 4) is None  # another identity has its own bucket
    now[0] = 1.0  # two tasks refilled
    assert rate.take("a", 2) is None
    now[0] = 100.0  # refills only up to the burst
    assert rate.take("a", 5) == pytest.approx(0.5)
    assert SubmitRate(rate=0, burst=1).take("a", 10**6) is None  # 0 = unlimited
