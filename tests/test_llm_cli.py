"""`shoal llm` in-process: results file, exit codes, dry run, bad input (exit 2), resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shoal.cli import main
from shoal.llm._cli import main as module_main
from shoal.llm.testing import OpenAIServer


def _requests(path: Path, n: int = 5) -> Path:
    lines = [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"hello {i}"}],
                "max_tokens": 20,
            },
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def test_shoal_llm_writes_results_in_order_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """shoal llm sends every request and writes one line each, in input order; a summary goes
    to standard error."""
    requests = _requests(tmp_path / "in.jsonl")
    out = tmp_path / "out.jsonl"
    with OpenAIServer(rpm=6000) as server:
        code = main(
            [
                *("llm", str(requests), "--out", str(out), "--base-url", server.url),
                *("--rpm", "6000", "--price-in", "0.15", "--price-out", "0.6"),
            ]
        )
    assert code == 0
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["custom_id"] for line in lines] == [f"r{i}" for i in range(5)]
    assert all(line["cost"] > 0 for line in lines)
    assert "5 of 5 requests succeeded" in capsys.readouterr().err


def test_a_failed_request_exits_1_and_keeps_its_line(tmp_path: Path) -> None:
    """A refused request makes the exit status 1; its line says why."""
    requests = _requests(tmp_path / "in.jsonl", 3)
    out = tmp_path / "out.jsonl"
    with OpenAIServer(script={"r2": [404]}) as server:
        code = module_main([str(requests), "--out", str(out), "--base-url", server.url, "--quiet"])
    assert code == 1
    last = json.loads(out.read_text().splitlines()[2])
    assert last["status"] == "failed"
    assert "404" in last["error"]["message"]


def test_dry_run_prints_the_estimate_and_sends_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--dry-run counts tokens and cost and exits 0 without a server."""
    requests = _requests(tmp_path / "in.jsonl", 4)
    code = main(
        ["llm", str(requests), "--dry-run", "--price-in", "1", "--price-out", "2", "--rpm", "60"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "requests:       4" in out
    assert "at most 80" in out
    assert "cost:" in out
    assert "$" in out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"custom_id": "a", "body": {"model": "m", "messages": []}}\nnot json\n', "in.jsonl:2"),
        ('{"custom_id": "a", "url": "/v1/images", "body": {"model": "m"}}\n', "in.jsonl:1"),
    ],
)
def test_bad_input_exits_2_naming_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    """A bad line stops before anything is sent, with exit code 2 and file:line."""
    path = tmp_path / "in.jsonl"
    path.write_text(content)
    code = main(["llm", str(path), "--base-url", "http://127.0.0.1:9/v1", "--quiet"])
    assert code == 2
    assert message in capsys.readouterr().err


def test_usage_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A missing file, one price without the other, a budget without prices: exit 2."""
    requests = _requests(tmp_path / "in.jsonl", 1)
    assert main(["llm", str(tmp_path / "missing.jsonl"), "--dry-run"]) == 2
    assert main(["llm", str(requests), "--price-in", "1"]) == 2
    assert main(["llm", str(requests), "--max-cost", "1", "--base-url", "http://x/v1"]) == 2
    assert main(["llm", str(requests), "--rpm", "0"]) == 2
    err = capsys.readouterr().err
    assert "no such file" in err
    assert "price" in err


def test_journal_resumes(tmp_path: Path) -> None:
    """With --journal, a second run reads every settled request back and sends nothing."""
    requests = _requests(tmp_path / "in.jsonl", 4)
    out = tmp_path / "out.jsonl"
    args = [str(requests), "--out", str(out), "--journal", "--quiet"]
    with OpenAIServer() as server:
        assert module_main([*args, "--base-url", server.url]) == 0
        first = out.read_text()
        assert module_main([*args, "--base-url", server.url]) == 0
        assert sum(server.received.values()) == 4
    assert (tmp_path / "out.jsonl.db").exists()
    assert [json.loads(x)["custom_id"] for x in out.read_text().splitlines()] == [
        json.loads(x)["custom_id"] for x in first.splitlines()
    ]
