"""The --config TOML file: defaults per broker, queue and type, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker import config_file
from broker.core.options import TaskOptions
from broker.core.retry import BackoffStrategy
from broker.errors import ConfigError

S = 1_000_000


def load(tmp_path: Path, text: str) -> config_file.FileConfig:
    path = tmp_path / "taskyard.toml"
    path.write_text(text)
    return config_file.load(str(path), heartbeat_us=10 * S, max_attempts=3)


def test_a_full_file_sets_defaults_queues_types_and_retention(tmp_path: Path) -> None:
    loaded = load(
        tmp_path,
        """
        [defaults.retry]
        max_attempts = 5
        strategy = "linear"
        initial_backoff = "250ms"
        non_retryable_error_types = ["ValueError"]
        [defaults.timeouts]
        heartbeat = "4s"
        [defaults.retention]
        succeeded = "1h"
        request_ids = "2h"
        [queues.mail.retry]
        max_attempts = 2
        [queues.mail.retention]
        failed = "3d"
        [types."report.build".timeouts]
        execution = "30m"
        soft = "25m"
        """,
    )
    d = loaded.defaults
    assert d.retry.max_attempts == 5 and d.retry.strategy is BackoffStrategy.LINEAR
    assert d.retry.initial_backoff_us == 250_000
    assert d.timeouts.heartbeat_us == 4 * S
    policy, timeouts = d.resolve(TaskOptions(), queue="mail", type_="report.build")
    assert policy.max_attempts == 2 and policy.non_retryable_error_types == {"ValueError"}
    assert timeouts.execution_us == 1800 * S and timeouts.soft_us == 1500 * S
    assert loaded.retention.default.succeeded_us == 3600 * S
    assert loaded.retention.request_id_us == 7200 * S
    assert loaded.retention.queues["mail"].failed_us == 3 * 86400 * S


def test_no_file_means_the_command_line_defaults(tmp_path: Path) -> None:
    loaded = config_file.load(None, heartbeat_us=7 * S, max_attempts=4)
    assert loaded.defaults.retry.max_attempts == 4
    assert loaded.defaults.timeouts.heartbeat_us == 7 * S


@pytest.mark.parametrize(
    "text,fragment",
    [
        (
            "[defaults.retry]\nmax_attempts = 'x'",
            "retry.max_attempts: expected an integer",
        ),
        ("[defaults.timeouts]\nexecution = '10 parsecs'", "is not a duration"),
        ("[queues.mail.retry]\nbackoff_coefficient = 0.5", "queue mail: backoff_coefficient"),
        ("[defaults.retry]\nstrategy = 'random'", "is not fixed, linear or exponential"),
        ("[defaults]\nretries = 3", "unknown key(s) ['retries']"),
        ("[types.t.timeouts]\nsoft = '5s'", "type t: timeouts.soft must be shorter"),
        ("not toml at all [", "cannot read config file"),
    ],
)
def test_mistakes_name_the_table_and_key(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert fragment in str(info.value)
