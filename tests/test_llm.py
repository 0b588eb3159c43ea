"""shoal.llm over real HTTP on loopback, against the OpenAI-compatible test server: order, no
double sends, rate and token limits, refunds, budgets, resume, failures, secrets, bad input."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import shoal.llm
from shoal.llm import LLMInputError, TokenCounter
from shoal.llm.testing import OpenAIServer

SECRET = "sk-test-DO-NOT-LEAK-0123456789"


def chat(i: int, max_tokens: int | None = 50, model: str = "gpt-4o-mini") -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": f"q{i}"}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return {"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}


def write(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_token_counts_are_exact_for_openai_models_and_marked_otherwise() -> None:
    """o200k_base counts "hello world" as 2 tokens; a chat adds 3 per message and 3 to prime
    the reply; another vendor's model is counted as an estimate."""
    counter = TokenCounter("gpt-4o")
    assert counter.encoding == "o200k_base"
    assert counter.text("hello world") == 2
    body = {"messages": [{"role": "user", "content": "hello world"}]}
    assert counter.request("chat", body) == (3 + 3 + counter.text("user") + 2, False)
    assert TokenCounter("gpt-4").encoding == "cl100k_base"
    assert TokenCounter("llama-3-70b").estimated
    rough = TokenCounter("gpt-4o", encoding="estimate")
    assert rough.estimated
    assert rough.text("x" * 10) == 3


def test_results_in_input_order_nothing_lost_nothing_sent_twice(tmp_path: Path) -> None:
    """With 500s, stalls and 429s on the way, every request gets one result line, in input order,
    matched to its request; the server answered each one 200 exactly once."""
    requests = [chat(i) for i in range(60)]
    script = {"c3": [500, 500], "c7": ["stall"], "c11": [429, 429], "c20": [502]}
    with OpenAIServer(
        script=script, fail_rate=0.1, latency=0.01, stall_seconds=8, retry_after=0.05, seed=4
    ) as server:
        result = shoal.llm.run(
            write(tmp_path / "in.jsonl", requests),
            out=tmp_path / "out.jsonl",
            base_url=server.url,
            concurrency=16,
            # Long enough that a loaded machine never times out an answer already sent (which
            # would then be sent again, rightly), short enough to give up on the stall.
            timeout=2.0,
            retries=6,
        )
        assert result.ok, result.summary()
        lines = read(tmp_path / "out.jsonl")
        assert [line["custom_id"] for line in lines] == [f"c{i}" for i in range(60)]
        for i, line in enumerate(lines):
            content = line["response"]["body"]["choices"][0]["message"]["content"]
            assert content == f"echo: q{i}"
            assert line["usage"]["completion_tokens"] == 16
        assert set(server.successes) == {f"c{i}" for i in range(60)}
        assert max(server.successes.values()) == 1
        # Attempts are the answers that were not 429 (the server's random 500s can add to the
        # scripted ones, depending on the order requests arrive in).
        answered = Counter(rid for _, rid, status in server.log if status != 429)
        throttled = Counter(rid for _, rid, status in server.log if status == 429)
        assert lines[3]["attempts"] == answered["c3"] >= 3  # two scripted 500s, then 200
        assert lines[11]["attempts"] == answered["c11"]  # its throttles used no attempt
        assert throttled["c11"] >= 2


def test_failures_are_in_the_same_file_with_their_error_class(tmp_path: Path) -> None:
    """A request the server refuses (400) fails after one attempt and keeps its line; the
    others succeed."""
    with OpenAIServer(script={"c1": [400, 400]}) as server:
        result = shoal.llm.run(
            [chat(i) for i in range(3)], out=tmp_path / "out.jsonl", base_url=server.url
        )
    lines = read(tmp_path / "out.jsonl")
    assert [line["status"] for line in lines] == ["ok", "failed", "ok"]
    assert lines[1]["error"]["type"] == "shoal._http.PermanentHTTPError"
    assert "400" in lines[1]["error"]["message"]
    assert lines[1]["attempts"] == 1
    assert (result.succeeded, result.failed) == (2, 1)


def test_rpm_is_held_so_the_server_never_answers_429(tmp_path: Path) -> None:
    """rpm=1200 is 20 a second; against a server enforcing exactly that, 70 requests take about
    3 s and get no 429."""
    with OpenAIServer(rpm=1200, latency=0.01) as server:
        start = time.perf_counter()
        result = shoal.llm.run([chat(i) for i in range(70)], base_url=server.url, rpm=1200)
        wall = time.perf_counter() - start
    assert result.ok
    assert server.statuses[429] == 0
    assert 2.5 <= wall <= 6.0


def test_unused_reply_tokens_are_given_back(tmp_path: Path) -> None:
    """Each request reserves 1,000 reply tokens but uses 16: with 2,000 tokens a second, the
    refunds let 40 requests through in about a second (without them: 20 s), with no 429."""
    with OpenAIServer(tpm=120_000, latency=0.02) as server:
        start = time.perf_counter()
        result = shoal.llm.run(
            [chat(i, max_tokens=1000) for i in range(40)], base_url=server.url, tpm=120_000
        )
        wall = time.perf_counter() - start
    assert result.ok
    assert server.statuses[429] == 0
    assert wall < 8.0


def test_adaptive_without_rates_meets_a_servers_limit(tmp_path: Path) -> None:
    """No rate given: the adaptive limit and the server's headers keep the 429s few, and every
    request succeeds."""
    with OpenAIServer(rpm=3000, latency=0.02) as server:
        result = shoal.llm.run([chat(i) for i in range(150)], base_url=server.url)
    assert result.ok
    assert server.statuses[429] <= 75  # (measured about 35: the benchmarks hold the target)
    assert max(server.successes.values()) == 1


def test_budget_stops_admitting_then_a_resume_with_more_sends_the_rest(tmp_path: Path) -> None:
    """With max_cost for about a third of the requests, the run sends no more once the next one
    could exceed it, spends no more than the budget, and says what was not sent; the same
    journal with a larger budget sends only the rest."""
    requests = write(tmp_path / "in.jsonl", [chat(i, max_tokens=100) for i in range(30)])
    prices = {"price_in": 1000.0, "price_out": 1000.0}  # USD per 1M tokens: 0.001 a token
    journal = tmp_path / "llm.db"
    with OpenAIServer(latency=0.01, reply_tokens=10) as server:
        first = shoal.llm.run(
            requests,
            out=tmp_path / "out.jsonl",
            base_url=server.url,
            max_cost=0.3,
            journal=journal,
            concurrency=4,
            **prices,
        )
        assert first.not_sent > 0
        assert first.spent <= 0.3
        assert first.left is not None
        assert first.left >= 0
        lines = read(tmp_path / "out.jsonl")
        assert len(lines) == 30
        assert {line["status"] for line in lines[-first.not_sent :]} == {"not_sent"}
        assert lines[-1]["error"]["type"] == "BudgetExceeded"
        assert "spent" in first.summary()

        second = shoal.llm.run(
            requests,
            out=tmp_path / "out.jsonl",
            base_url=server.url,
            max_cost=100.0,
            journal=journal,
            **prices,
        )
        assert second.ok
        assert second.run.stats.resumed == 30 - first.not_sent
        assert max(server.successes.values()) == 1
        assert len(server.successes) == 30
        assert second.spent == pytest.approx(
            sum(line["cost"] for line in read(tmp_path / "out.jsonl"))
        )


def test_the_api_key_never_reaches_results_journal_reports_or_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The key is read from the environment and sent; it is in no result, journal, report or
    error message, even when the server echoes it back."""
    monkeypatch.setenv("MY_KEY", SECRET)
    with OpenAIServer(api_key=SECRET) as server:
        result = shoal.llm.run(
            [chat(i) for i in range(3)],
            out=tmp_path / "out.jsonl",
            base_url=server.url,
            api_key_env="MY_KEY",
            journal=tmp_path / "j.db",
        )
        assert result.ok
    with OpenAIServer(api_key="other") as server:
        monkeypatch.setenv("MY_KEY", SECRET)
        bad = shoal.llm.run(
            [chat(i) for i in range(2)],
            out=tmp_path / "bad.jsonl",
            base_url=server.url,
            api_key_env="MY_KEY",
        )
    assert bad.failed == 2
    texts = [
        (tmp_path / "out.jsonl").read_text(),
        (tmp_path / "bad.jsonl").read_text(),
        (tmp_path / "j.db").read_bytes().decode("latin-1"),
        result.summary(),
        bad.summary(),
        repr(bad.run.failures),
        result.run.report.to_text()
        if hasattr(result.run.report, "to_text")
        else str(result.run.report),
    ]
    for text in texts:
        assert SECRET not in text


def test_bad_input_names_the_file_line_and_fix(tmp_path: Path) -> None:
    """A line that is not JSON, a body without a model, a custom_id used twice: each stops the
    run before anything is sent, naming file and line."""
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(chat(0)) + "\n{not json\n")
    with pytest.raises(LLMInputError, match=r"in\.jsonl:2: not valid JSON"):
        shoal.llm.run(path, base_url="http://127.0.0.1:9/v1")
    write(path, [{"messages": []}])
    with pytest.raises(LLMInputError, match=r"in\.jsonl:1: .*model"):
        shoal.llm.run(path, base_url="http://127.0.0.1:9/v1")
    write(path, [chat(0), chat(0)])
    with pytest.raises(LLMInputError, match="used twice"):
        shoal.llm.run(path, base_url="http://127.0.0.1:9/v1")
    with pytest.raises(LLMInputError, match="price"):
        shoal.llm.run([chat(0)], base_url="http://127.0.0.1:9/v1", max_cost=1.0)


def test_bare_bodies_and_embeddings(tmp_path: Path) -> None:
    """Bare request bodies are accepted (chat by "messages", embeddings by "input"), with ids
    request-<line>."""
    lines = [
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        {"model": "text-embedding-3-small", "input": ["a", "b"]},
    ]
    with OpenAIServer() as server:
        result = shoal.llm.run(write(tmp_path / "in.jsonl", lines), base_url=server.url)
    assert result.ok
    assert [r["custom_id"] for r in result.results] == ["request-1", "request-2"]
    assert len(result.results[1]["response"]["body"]["data"]) == 2


def test_estimate_counts_tokens_and_cost_without_sending(tmp_path: Path) -> None:
    """A dry run counts prompts exactly for OpenAI models and bounds the cost by max_tokens."""
    found = shoal.llm.estimate(
        [chat(i, max_tokens=100) for i in range(10)], price_in=1.0, price_out=2.0, rpm=60
    )
    assert found.requests == 10
    assert found.reply_tokens_max == 1000
    assert not found.estimated
    assert found.cost_low == pytest.approx(found.prompt_tokens / 1e6)
    assert found.cost_high == pytest.approx(found.prompt_tokens / 1e6 + 1000 * 2 / 1e6)
    assert found.min_seconds == pytest.approx(10.0)
    assert "exact" in str(found)
    assert shoal.llm.estimate([chat(0, model="mistral-large")]).estimated
