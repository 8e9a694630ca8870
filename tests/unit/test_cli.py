"""Bad invocations of ``parcelflow``: each ends with one line naming the problem and exit
code 2, never a traceback. Nothing here reaches a broker or a receiver that exists."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from workers.cli import main

BOX = ["send", "box", "--order-id", "1001", "--box-id", "1001-A"]


def cases(tmp: Path) -> list[tuple[list[str], str]]:
    broken = tmp / "broken.json"
    broken.write_text('{"order_id": ')
    return [
        ([], "the following arguments are required: command"),
        (["nope"], "invalid choice: 'nope'"),
        (["send"], "the following arguments are required: what"),
        (["send", "parcel"], "invalid choice: 'parcel'"),
        (["send", "box"], "send box needs --order-id, --box-id and --item"),
        ([*BOX, "--item", "MUG=abc"], "--item 'MUG=abc': use SKU=QTY with QTY from 1 to 10000"),
        ([*BOX, "--item", "MUG=0"], "QTY from 1 to 10000"),
        ([*BOX, "--item", "=2"], "--item '=2'"),
        ([*BOX, "--item", "MUG", "--weight-lb", "heavy"], "invalid float value: 'heavy'"),
        ([*BOX, "--item", "MUG", "--url", "http://127.0.0.1:9"], "cannot reach the receiver"),
        (["send", "webhook", "--order-id", "1001"], "send webhook needs --order-id and --item"),
        (["send", "webhook"], "send webhook needs --order-id and --item"),
        (["send", "order"], "send order needs --file"),
        (["send", "order", "--file", str(tmp / "none.json")], "none.json: no such file"),
        (["send", "order", "--file", str(broken)], "broken.json: not valid JSON"),
        (["send", "box", "--file", str(tmp)], "cannot read it"),
        (["send", "box", "--station", "P1", "--item", "A"], "send box needs --order-id"),
        (["labels", "get"], "labels get needs a JOB_ID, a --box BOX_ID, or both"),
        (["labels", "get", "J1", "--url", "ftp://x"], "an http:// or https:// address"),
        (["labels", "prune", "--older-than", "soon"], "use e.g. 30d, 12h, 90m"),
        (["labels", "get", "J1", "--format", "gif"], "invalid choice: 'gif'"),
        (["topics", "tail"], "topics tail needs a topic"),
        (["topics", "tail", "nosuch.v1"], "unknown topic 'nosuch.v1'"),
        (["topics", "tail", "labels.v1", "--limit", "0"], "--limit: a number of records"),
        (["topics", "frobnicate"], "invalid choice: 'frobnicate'"),
        (["failures", "replay"], "name the jobs to replay with --job-id"),
        (["tokens", "set"], "tokens set needs --shop-id"),
        (["tokens", "set", "--shop-id", "7495"], 'stdin must be JSON with "access_token"'),
        (["principals", "token"], "principals token needs --name and at least one --role"),
        (["principals", "token", "--name", "a b", "--role", "orders"], "--name is 1 to 64"),
        (["principals", "token", "--name", "s1", "--role", "boxes"], 'need "warehouses"'),
        (["run", "--orders", "many"], "invalid int value: 'many'"),
    ]


def test_every_bad_invocation_ends_in_one_line_and_exit_code_2(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("PARCELFLOW_KAFKA_BOOTSTRAP", "127.0.0.1:9")  # no devstack is used
    monkeypatch.chdir(tmp_path)
    table = cases(tmp_path)
    assert len(table) >= 20
    for argv, problem in table:
        monkeypatch.setattr("sys.stdin", io.StringIO("not json"))
        with pytest.raises(SystemExit) as stopped:
            main(argv)
        out = capsys.readouterr()
        last = (out.err.strip().splitlines() or [""])[-1]
        assert stopped.value.code == 2, (argv, out.err)
        assert "Traceback" not in out.err + out.out, argv
        assert last.startswith("parcelflow"), (argv, last)
        assert problem in last, (argv, last)


def test_each_send_kind_has_its_own_help_with_an_example(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["send", "box", "--help"])
    text = capsys.readouterr().out
    assert "--box-id" in text and "--station" in text and "example: parcelflow send box" in text
    assert "--shop-id" not in text and "--status" not in text  # a webhook's flags
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    assert all(f"parcelflow {c}" in text for c in ("send", "labels", "principals", "tokens"))


def test_every_command_has_help_with_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    from workers.cli import parser

    commands = parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, command in commands.items():
        example = command.epilog or ""
        assert (example.startswith("example:") and "parcelflow " in example) or name == "send", name
    for kind in ("webhook", "box", "order"):
        with pytest.raises(SystemExit):
            main(["send", kind, "--help"])
        assert f"example: parcelflow send {kind}" in capsys.readouterr().out
