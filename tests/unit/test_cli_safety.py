"""What the CLI prints and reads: escaped records, settings errors without values, a
devstack file taken only from its owner, the ACLs each worker principal needs."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from devstack import discover
from tests.conftest import FAKE_SECRETS
from workers import acls
from workers.cli import load_settings
from workers.settings import Settings
from workers.terminal import safe


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain-id 42", "plain-id 42"),
        ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),  # clears the screen, if printed as is
        ("abc\u202edcba", "abc\\u202edcba"),  # a bidi override
        ("a\tb\nc", "a\\x09b\\x0ac"),
        ("é 東京", "é 東京"),
    ],
)
def test_records_are_printed_with_every_unprintable_character_escaped(
    text: str, shown: str
) -> None:
    assert safe(text) == shown


def test_a_bad_setting_names_the_setting_and_never_echoes_its_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "hunter2-secret-value"
    monkeypatch.setenv("PARCELFLOW_KAFKA_SASL_PASSWORD", secret)
    monkeypatch.setenv("PARCELFLOW_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("PARCELFLOW_KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("PARCELFLOW_KAFKA_SASL_USERNAME", "u")
    monkeypatch.setenv("PARCELFLOW_RECEIVER_PORT", "not-a-port")
    with pytest.raises(SystemExit) as stopped:
        load_settings()
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert "PARCELFLOW_RECEIVER_PORT: Input should be a valid integer" in err
    assert secret not in err and "not-a-port" not in err
    monkeypatch.setenv("PARCELFLOW_RECEIVER_PORT", "8080")
    with pytest.raises(SystemExit):
        load_settings()
    err = capsys.readouterr().err
    assert "password in clear" in err and secret not in err
    monkeypatch.setenv("PARCELFLOW_PRINCIPALS", '{"broken": ' + secret)
    with pytest.raises(SystemExit):
        load_settings()
    err = capsys.readouterr().err
    assert "PARCELFLOW_PRINCIPALS: not valid JSON" in err and secret not in err


def test_a_devstack_file_is_used_only_if_this_user_owns_it_and_only_its_client_keys(
    tmp_path: Path,
) -> None:
    path = tmp_path / "devstack.env"
    path.write_text(
        f"# pid {os.getpid()}; logs in x\n"
        "PARCELFLOW_KAFKA_BOOTSTRAP=127.0.0.1:1\n"
        "PARCELFLOW_SHIPIUM_BASE_URL=http://attacker.invalid\n"
        "PYTHONPATH=/tmp/evil\n"
    )
    path.chmod(0o600)
    assert discover.running(path) == {"PARCELFLOW_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    path.chmod(0o622)  # others may write it: not trusted
    assert discover.running(path) is None
    link = tmp_path / "link.env"
    link.symlink_to(path)
    path.chmod(0o600)
    assert discover.running(link) is None


def can(rows: list[acls.Acl]) -> Callable[[str, str, str, str], bool]:
    """``allowed(worker, resource, name, operation)`` by these ACL rows."""

    def allowed(worker: str, resource: str, name: str, op: str) -> bool:
        return acls.Acl(acls.principal_of(worker), resource, name, op) in rows

    return allowed


def token_readers(rows: list[acls.Acl]) -> set[str]:
    """The principals that may read the TikTok tokens topic."""
    return {
        a.principal for a in rows if a.name == "prod.tiktok.tokens.v1" and a.operation == "Read"
    }


def test_each_worker_principal_gets_only_what_it_does_on_kafka() -> None:
    settings = Settings(**FAKE_SECRETS, topic_namespace="prod.")
    rows = acls.acls(settings)
    allowed = can(rows)
    assert allowed("labeler", "topic", "prod.label-jobs.v1", "Read")
    assert allowed("labeler", "topic", "prod.labels.v1", "Write")
    assert allowed("labeler", "group", "prod.parcelflow-labeler", "Read")
    assert not allowed("labeler", "topic", "prod.orders.v1", "Write")
    assert allowed("receiver", "topic", "prod.tiktok.webhooks.v1", "Write")
    # the receiver reads only the labels (for the stations' label events), no group
    receiver_reads = {
        (a.resource, a.name)
        for a in rows
        if a.principal == "User:parcelflow-receiver" and a.operation == "Read"
    }
    assert receiver_reads == {("topic", "prod.labels.v1")}
    assert allowed("planner", "topic", "prod.parcelflow-planner-orders-changelog", "Write")
    assert allowed("planner", "group", "prod.parcelflow-planner", "Read")
    assert allowed("dashboard", "group", "prod.parcelflow-labeler", "Describe")
    assert not allowed("dashboard", "group", "prod.parcelflow-labeler", "Read")
    assert allowed("topics", "topic", "prod.labels.v1", "Create")
    # the TikTok tokens: only the enricher reads or writes them
    assert token_readers(rows) == {"User:parcelflow-enricher"}
    assert not any(a.operation == "Create" and "topics" not in a.principal for a in rows)
    commands = acls.as_commands(rows, "kafka:9093").splitlines()
    assert len(commands) == len(rows)
    assert all(c.startswith("kafka-acls.sh --bootstrap-server kafka:9093") for c in commands)


def test_tiktok_shipping_lets_the_labelers_read_tokens_and_count_the_enrichers() -> None:
    settings = Settings(**FAKE_SECRETS, topic_namespace="prod.", label_providers={"7": "tiktok"})
    rows = acls.acls(settings)
    allowed = can(rows)
    assert allowed("labeler", "topic", "prod.tiktok.tokens.v1", "Read")
    assert allowed("labeler", "group", "prod.parcelflow-enricher", "Describe")
    assert allowed("enricher", "group", "prod.parcelflow-labeler", "Describe")
    assert not allowed("labeler", "group", "prod.parcelflow-enricher", "Read")
    assert token_readers(rows) == {"User:parcelflow-enricher", "User:parcelflow-labeler"}
