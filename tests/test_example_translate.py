"""The translation example: 10 Markdown documents x 15 languages over real HTTP on loopback, against
``shoal.llm.testing.OpenAIServer`` answering with a reversible pseudo-translation
(``examples/demo_translate.py``), so every translated segment can be checked, and the stand-in
model counts every segment it was asked for.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

import shoal
from shoal import cli
from shoal._jobfiles import load
from shoal.llm.testing import OpenAIServer

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
EXAMPLE = EXAMPLES / "translate.py"
SECRET = "sk-test-9f8e7d6c5b4a39281706"  # a made-up key, looked for in everything written

pytest.importorskip("httpx", reason="the example needs shoal[llm]")


@pytest.fixture(scope="module")
def translate() -> ModuleType:
    return load(EXAMPLE)


@pytest.fixture(scope="module")
def demo(translate: ModuleType) -> ModuleType:
    return importlib.import_module("demo_translate")  # beside the job file, on the path since load


@pytest.fixture
def configured(translate: ModuleType) -> Iterator[None]:
    yield
    translate.configure(None)


def sources(translate: ModuleType) -> dict[str, str]:
    root = translate.SAMPLE_DOCS
    return {doc: (root / doc).read_text(encoding="utf-8") for doc in translate.documents(root)}


def distinct(translate: ModuleType) -> set[str]:
    """Every distinct segment of the sample set (what each language needs translated once)."""
    return {
        s
        for text in sources(translate).values()
        for s in translate.segments_of(translate.parse(text))
    }


@dataclass
class Rounds:
    """Two runs of the example's own job over the sample: with an empty memory, then again."""

    first: shoal.Run[Any]
    second: shoal.Run[Any]
    server: OpenAIServer
    model: Any
    out: Path
    memory: Path
    received_after_first: int
    answered_after_first: dict[tuple[str, str], int]
    outputs_after_first: dict[Path, str]
    scripted: dict[str, list[int | str]]
    settings: Any


@pytest.fixture(scope="module")
def rounds(
    translate: ModuleType, demo: ModuleType, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Rounds]:
    tmp = tmp_path_factory.mktemp("translate")
    out, memory = tmp / "out", tmp / "memory.sqlite"
    # The first piece of each language is the first document: it sends all of that document's
    # segments, so its first request is known in advance. Three of them are scripted to fail
    # (429, then 500), on top of 10% of random 500s.
    first_doc = translate.documents(translate.SAMPLE_DOCS)[0]
    segments = list(
        dict.fromkeys(translate.segments_of(translate.parse(sources(translate)[first_doc])))
    )
    counter = shoal.llm.TokenCounter(translate.DEFAULT_MODEL)
    first_batch = translate.batches(segments, counter)[0]
    scripted: dict[str, list[int | str]] = {
        translate.request_id(lang, first_batch): [429, 500] for lang in ("de", "ja", "pt-BR")
    }
    model = demo.DemoModel()
    with demo.server(model, fail_rate=0.1, seed=3, script=scripted, retry_after=0.05) as server:
        settings = translate.Settings(out=out, memory=memory, base_url=server.url)
        translate.configure(settings)
        try:
            first = translate.job.run(translate.items())
            received = sum(server.received.values())
            answered = dict(model.answered)
            outputs = {p: p.read_text(encoding="utf-8") for p in out.rglob("*.md")}
            for path in outputs:
                path.unlink()  # the second run writes every document again
            second = translate.job.run(translate.items())
        finally:
            translate.configure(None)
        yield Rounds(
            first,
            second,
            server,
            model,
            out,
            memory,
            received,
            answered,
            outputs,
            scripted,
            settings,
        )


FENCED = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
FRONT = re.compile(r"\A---\n.*?\n---\n", re.DOTALL)
INDENTED = re.compile(r"(?:^(?:    |\t).*\n)+", re.MULTILINE)


def code_and_front_matter(text: str) -> list[str]:
    """What must not be translated, found without the example's parser: front matter, fenced and
    indented code blocks."""
    fenced = [m.group(0) for m in FENCED.finditer(text)]
    indented = INDENTED.findall(FENCED.sub("", FRONT.sub("", text)))
    return FRONT.findall(text) + fenced + indented


def prose(text: str) -> str:
    """The text outside front matter, code blocks, inline code and link targets."""
    text = FENCED.sub("", FRONT.sub("", text))
    text = INDENTED.sub("", text)
    return re.sub(r"`[^`]*`|\]\([^)]*\)|https?://\S+", " ", text)


def test_every_document_in_every_language(
    translate: ModuleType, demo: ModuleType, rounds: Rounds
) -> None:
    """150 pieces (10 documents x 15 languages), each written to OUT/<lang>/<path>: front matter
    and code blocks byte for byte, every segment the stand-in model's translation of its source,
    and no English word of the source left in the prose."""
    run = rounds.first
    assert run.ok, run.failures
    assert len(run.outcomes) == 150
    docs = sources(translate)
    assert len(docs) == 10
    assert len(translate.LANGUAGES) == 15
    for doc, text in docs.items():
        parts = translate.parse(text)
        segs = translate.segments_of(parts)
        words = {w for w in re.findall(r"[A-Za-z]{4,}", prose(text)) if w != w[::-1]}
        for lang in translate.LANGUAGES:
            path = rounds.out / lang / doc
            got = rounds.outputs_after_first[path]
            assert code_and_front_matter(got) == code_and_front_matter(text), path
            assert got.count(f"⟪{lang}⟫ ") == len(segs), path
            expected = translate.assemble(parts, {s: demo.pseudo(s, lang) for s in segs})
            assert got == expected, path
            left = words & set(re.findall(r"[A-Za-z]{4,}", prose(got)))
            assert not left, (path, sorted(left)[:5])


def test_sample_has_code_and_repeats(translate: ModuleType) -> None:
    """The sample is what the example claims: code blocks in every document, segments repeated
    across documents (about a fifth of all), inline code and links inside segments."""
    docs = sources(translate)
    assert all(code_and_front_matter(t) for t in docs.values())
    assert sum(len(FENCED.findall(t)) for t in docs.values()) >= 20
    occurrences = [s for t in docs.values() for s in translate.segments_of(translate.parse(t))]
    assert len(occurrences) == 211
    assert len(set(occurrences)) == 168
    assert any("`" in s for s in occurrences)
    assert any("](" in s for s in occurrences)


def test_each_segment_asked_for_once_per_language(translate: ModuleType, rounds: Rounds) -> None:
    """The stand-in model answered every distinct segment of the set exactly once per language,
    although 150 pieces ran at once and many segments repeat across documents; pieces report
    their memory hits."""
    wanted = {(lang, s) for lang in translate.LANGUAGES for s in distinct(translate)}
    assert set(rounds.answered_after_first) == wanted
    assert set(rounds.answered_after_first.values()) == {1}
    values = [o.value for o in rounds.first.outcomes]
    assert sum(v["sent"] for v in values) == len(wanted) == 15 * 168
    assert sum(v["segments"] - v["sent"] for v in values) == 15 * (211 - 168)
    assert all(v["from_memory"] == 0 for v in values)


def test_retries_and_throttles_without_duplicates(translate: ModuleType, rounds: Rounds) -> None:
    """Scripted 429s and 500s and 10% random 500s: every piece still succeeds, the 429s wait
    without using an attempt, the 500s are retried, and no request was answered twice."""
    server, run = rounds.server, rounds.first
    for rid in rounds.scripted:
        assert server.received[rid] >= 2  # 429, then 500 (the retry may ask for fewer segments:
        assert server.successes[rid] <= 1  # another piece may have taken some over meanwhile)
    first_doc = translate.documents(translate.SAMPLE_DOCS)[0]
    for outcome in run.outcomes:
        if outcome.item["doc"] == first_doc and outcome.item["lang"] in ("de", "ja", "pt-BR"):
            assert outcome.ok
            assert outcome.throttles >= 1
            assert outcome.attempts >= 2
    assert server.statuses[429] >= 3
    assert server.statuses[500] >= 3 + 5
    assert run.stats.throttles >= 3
    assert run.stats.retries >= 3 + 5
    assert max(server.successes.values()) == 1
    assert run.stats.failed == 0


def test_second_run_sends_nothing(translate: ModuleType, rounds: Rounds) -> None:
    """With the memory of the first run, a second run sends no request at all and writes the
    same documents; every segment is a hit from an earlier run."""
    run = rounds.second
    assert run.ok, run.failures
    assert sum(rounds.server.received.values()) == rounds.received_after_first
    assert dict(rounds.model.answered) == rounds.answered_after_first
    again = {p: p.read_text(encoding="utf-8") for p in rounds.out.rglob("*.md")}
    assert again == rounds.outputs_after_first
    for outcome in run.outcomes:
        value = outcome.value
        assert value["sent"] == 0
        assert value["from_memory"] == value["segments"] > 0
        assert (outcome.usage or {}).get("requests", 0) == 0


def test_report_tables(
    translate: ModuleType, rounds: Rounds, tmp_path: Path, configured: None
) -> None:
    """A row per language (documents, segments, sent, TM hits, tokens, cost), the memory's
    savings over the run, and the settings; the second run's report shows 100% hits."""
    translate.configure(rounds.settings)  # as under shoal run: the same settings as the run's
    report = rounds.first.report
    translate.extend_report(report, rounds.first)
    tables = {t.title: t for t in report.tables}
    assert list(tables) == [
        "Translation per language",
        "Translation memory savings",
        "Translation settings",
    ]
    settings = tables["Translation settings"]
    assert settings.rows[0][settings.columns.index("endpoint")] == rounds.server.url
    per_language = tables["Translation per language"]
    assert per_language.total == 15
    column = per_language.columns.index
    for row in per_language.rows:
        assert row[column("docs")] == 10
        assert row[column("segments")] == 211
        assert row[column("sent")] == 168
        assert row[column("TM hits")] == 43
        assert row[column("tokens")] > 0
        assert row[column("cost")] > 0
    assert tables["Translation memory savings"].columns == ("measure", "value")
    total = dict(tables["Translation memory savings"].rows)
    assert total["segments"] == 15 * 211
    assert total["distinct per language"] == 15 * 168
    assert total["TM hits"] == 15 * 43
    assert total["hit rate"] == "20%"
    assert total["tokens saved (est.)"] > 0
    assert report.charts
    saved = report.save(tmp_path / "first.md").read_text()
    assert "Translation memory savings" in saved

    report = rounds.second.report
    translate.extend_report(report, rounds.second)
    second = {t.title: t for t in report.tables}["Translation memory savings"]
    total = dict(second.rows)
    assert total["hit rate"] == "100%"
    assert total["requests"] == total["sent"] == total["tokens"] == 0
    assert total["from earlier runs"] == 15 * 211


def test_memory_file(translate: ModuleType, rounds: Rounds) -> None:
    """The memory is an SQLite file holding every distinct segment once per language."""
    loaded = translate.Memory(rounds.memory).load()
    assert set(loaded) == set(translate.LANGUAGES)
    assert all(set(m) == distinct(translate) for m in loaded.values())


def test_one_language_shares_requests_in_flight(
    translate: ModuleType, demo: ModuleType, tmp_path: Path, configured: None
) -> None:
    """All ten documents of one language at once under weighted rates: repeated segments are
    still sent once (the pieces that need one while it is in flight wait for that request), and
    when that request fails for good the next piece that needs a segment sends it itself."""
    first_doc = translate.documents(translate.SAMPLE_DOCS)[0]
    text = sources(translate)[first_doc]
    segments = list(dict.fromkeys(translate.segments_of(translate.parse(text))))
    counter = shoal.llm.TokenCounter(translate.DEFAULT_MODEL)
    rid = translate.request_id("de", translate.batches(segments, counter)[0])
    model = demo.DemoModel()
    with demo.server(model, latency=0.05, script={rid: [400]}) as server:
        translate.configure(
            translate.Settings(
                out=tmp_path / "out",
                memory=tmp_path / "tm.sqlite",
                languages=("de",),
                base_url=server.url,
            )
        )
        job = translate.make_job(rpm=60_000, tpm=10_000_000, concurrency=16)
        run = job.run(translate.items())
    failed = [o.item["doc"] for o in run.outcomes if not o.ok]
    assert failed == [first_doc]  # 400: not retried
    assert run.failures[0].error.type == "shoal._http.PermanentHTTPError"
    assert set(model.answered.values()) == {1}
    others = {
        s
        for doc, t in sources(translate).items()
        if doc != first_doc
        for s in translate.segments_of(translate.parse(t))
    }
    assert {s for _, s in model.answered} == others
    assert sum(o.value["repeats"] for o in run.outcomes if o.ok) > 0
    assert server.peak_in_flight > 1


def test_shoal_run_twice_with_a_key_from_the_environment(
    tmp_path: Path,
    demo: ModuleType,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``shoal run examples/translate.py`` with the base URL and the key's variable in the
    environment: the server gets the key, which appears in no output, journal, memory or report;
    the same command again resumes from the journal and sends nothing."""
    pytest.importorskip("matplotlib", reason="the HTML report's charts need shoal[report]")
    model = demo.DemoModel()
    with demo.server(model, api_key=SECRET) as server:
        monkeypatch.setenv("TRANSLATE_BASE_URL", server.url)
        monkeypatch.setenv("TRANSLATE_API_KEY_ENV", "TRANSLATE_TEST_KEY")
        monkeypatch.setenv("TRANSLATE_TEST_KEY", SECRET)
        monkeypatch.setenv("TRANSLATE_LANGUAGES", "de,ja")
        monkeypatch.setenv("TRANSLATE_OUT", str(tmp_path / "out"))
        monkeypatch.setenv("TRANSLATE_MEMORY", str(tmp_path / "tm.sqlite"))
        args = [
            "run",
            str(EXAMPLE),
            "--journal",
            str(tmp_path / "translate.db"),
            "--out",
            str(tmp_path / "results.jsonl"),
            "--report",
            str(tmp_path / "translate.html"),
        ]
        assert cli.main(args) == 0, capsys.readouterr().err
        received = sum(server.received.values())
        assert server.statuses[401] == 0
        assert received == server.statuses[200] > 0
        assert cli.main(args) == 0
        assert sum(server.received.values()) == received
    printed = capsys.readouterr()
    assert "20 done" in printed.err
    page = (tmp_path / "translate.html").read_text()
    for text in ("Translation per language", "Japanese (ja)", "Translation memory savings"):
        assert text in page
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(records) == 20
    assert all(r["ok"] for r in records)
    assert len(list((tmp_path / "out").rglob("*.md"))) == 20
    secret = SECRET.encode()
    assert secret not in (printed.out + printed.err).encode()
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), path


def test_a_wrong_key_fails_without_showing_it(
    translate: ModuleType,
    demo: ModuleType,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    configured: None,
) -> None:
    """A key the server refuses (401) fails each piece at once, and the message names neither
    key."""
    monkeypatch.setenv("TRANSLATE_TEST_KEY", SECRET)
    with demo.server(demo.DemoModel(), api_key="sk-the-right-one") as server:
        translate.configure(
            translate.Settings(
                out=tmp_path / "out",
                memory=tmp_path / "tm.sqlite",
                languages=("fr",),
                base_url=server.url,
                api_key_env="TRANSLATE_TEST_KEY",
            )
        )
        run = translate.job.run(translate.items()[:2], journal=tmp_path / "j.db")
    assert [o.ok for o in run.outcomes] == [False, False]
    for failure in run.failures:
        assert failure.attempts == 1
        assert "401" in failure.error.message
        assert SECRET not in failure.error.message
        assert "sk-the-right-one" not in failure.error.message
    assert SECRET.encode() not in (tmp_path / "j.db").read_bytes()


def test_bad_items_fail_alone(
    translate: ModuleType, demo: ModuleType, tmp_path: Path, configured: None
) -> None:
    """Items that are not a document of the folder in a language code (a path outside it, a
    code with a slash, a bare path, a missing file) fail at once with the cause, without
    stopping the rates' reservations or the others; the report lists them."""
    with demo.server(demo.DemoModel()) as server:
        translate.configure(
            translate.Settings(out=tmp_path / "out", memory=tmp_path / "tm", base_url=server.url)
        )
        items = [
            {"doc": "../translate.py", "lang": "de"},
            {"doc": "index.md", "lang": "de/../../x"},
            "index.md",
            {"doc": "missing.md", "lang": "de"},
            {"doc": "index.md", "lang": "de"},
        ]
        run = translate.make_job(rpm=60_000, tpm=1_000_000).run(items)
    assert [o.ok for o in run.outcomes] == [False, False, False, False, True]
    causes = [(f.error.type, f.attempts) for f in run.failures]
    assert causes == [
        ("translate.BadItem", 1),
        ("translate.BadItem", 1),
        ("translate.BadItem", 1),
        ("FileNotFoundError", 1),
    ]
    assert "outside" in run.failures[0].error.message or "relative" in run.failures[0].error.message
    assert not (tmp_path / "x").exists()
    report = run.report
    translate.extend_report(report, run)
    assert {t.title: t for t in report.tables}["Failed documents"].total == 4


def test_main_serves_the_demo_model(
    translate: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python examples/translate.py`` without a base URL translates with the stand-in model it
    serves on loopback (a few 500s and 429s included), then stops it."""
    code = translate.main(
        [
            "--out",
            str(tmp_path / "out"),
            "--memory",
            str(tmp_path / "tm.sqlite"),
            "--languages",
            "de,zh-CN",
            "--report",
            str(tmp_path / "report.md"),
            "--quiet",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "20 of 20 documents translated" in printed
    assert "336 sent" in printed
    assert len(list((tmp_path / "out" / "zh-CN").rglob("*.md"))) == 10
    assert "Translation per language" in (tmp_path / "report.md").read_text()
    assert translate._demo is None


def test_segmentation_rules(translate: ModuleType) -> None:
    """Headings, sentences, list items, quotes and table cells are segments; front matter, code
    (fenced, indented, in a quote), HTML, link definitions and cells without words are kept."""
    text = (
        "---\ntitle: T\n---\n"
        "# Hello world #\n\n"
        "First one, e.g. this. Second `a. B` one! Third\nline.\n\n"
        "    indented code\n\n"
        "- item one\n  continued\n1. [x] done\n\n"
        "> **Note:** quoted. Two.\n> ```\n> code in a quote\n> ```\n\n"
        "| Option | Default |\n| --- | ---: |\n| `keep` | 2 |\n| Name | none |\n\n"
        "Title\n=====\n\n"
        "<div>raw</div>\n\n[ref]: https://example.com\n\n---\n"
    )
    parts = translate.parse(text)
    assert translate.segments_of(parts) == [
        "Hello world",
        "First one, e.g. this.",
        "Second `a. B` one!",
        "Third line.",
        "item one continued",
        "done",
        "**Note:** quoted.",
        "Two.",
        "Option",
        "Default",
        "Name",
        "none",
        "Title",
    ]
    upper = translate.assemble(parts, {s: s.upper() for s in translate.segments_of(parts)})
    assert upper.startswith("---\ntitle: T\n---\n# HELLO WORLD #\n")
    for kept in ("    indented code\n", "> code in a quote\n", "| `keep` | 2 |", "<div>raw</div>"):
        assert kept in upper
    assert "FIRST ONE, E.G. THIS. SECOND `A. B` ONE! THIRD LINE.\n" in upper


def test_answers_are_checked(translate: ModuleType) -> None:
    """An answer must be a JSON object of every id asked for (a code fence around it is fine),
    keep inline code, link targets and URLs, and is made one line."""
    batch = ["Run `tidepool doctor` first.", "See [the guide](install.md)."]
    good = {"1": "Führe zuerst `tidepool doctor` aus.", "2": "Siehe [die\nAnleitung](install.md)."}
    assert translate.read_answer("```json\n" + json.dumps(good) + "\n```", batch) == {
        batch[0]: good["1"],
        batch[1]: "Siehe [die Anleitung](install.md).",
    }
    bad = [
        "not json",
        json.dumps(["a", "b"]),
        json.dumps({"1": good["1"]}),
        json.dumps({**good, "1": "Führe zuerst `tidepool Doktor` aus."}),
        json.dumps({**good, "2": "Siehe [die Anleitung](installieren.md)."}),
        json.dumps({**good, "2": "  "}),
    ]
    for answer in bad:
        with pytest.raises(translate.BadTranslation):
            translate.read_answer(answer, batch)


def test_pseudo_translation_is_reversible(demo: ModuleType) -> None:
    """The stand-in model's translation keeps inline code and link targets and reverses back."""
    text = "Run `tidepool doctor` first, see [the guide](https://x.example/a) or <b>this</b>."
    translated = demo.pseudo(text, "pt-BR")
    assert translated == (
        "⟪pt-BR⟫ nuR `tidepool doctor` tsrif, ees [eht ediug](https://x.example/a) ro <b>siht</b>."
    )
    assert demo.unpseudo(translated) == ("pt-BR", text)
    with pytest.raises(ValueError, match="not a pseudo-translation"):
        demo.unpseudo(text)


def test_server_reply_option() -> None:
    """``OpenAIServer(reply=...)`` answers chat and completions with its text, only for 200s;
    a reply that raises is answered 500 and counted."""
    seen: list[str] = []

    def reply(body: dict[str, Any]) -> str:
        last = body.get("messages", [{"content": body.get("prompt")}])[-1]["content"]
        if last == "boom":
            raise RuntimeError("boom")
        seen.append(last)
        return last[::-1]

    with OpenAIServer(reply=reply, script={"r1": [500]}) as server:
        with httpx.Client(base_url=server.url) as client:

            def chat(rid: str, text: str) -> httpx.Response:
                body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
                return client.post(
                    "/chat/completions", json=body, headers={"X-Client-Request-Id": rid}
                )

            assert chat("r1", "abc").status_code == 500  # scripted: reply not called
            answer = chat("r1", "abc").json()
            assert answer["choices"][0]["message"]["content"] == "cba"
            completion = client.post("/completions", json={"model": "m", "prompt": "xyz"})
            assert completion.json()["choices"][0]["text"] == "zyx"
            assert chat("r2", "boom").status_code == 500
        assert seen == ["abc", "xyz"]
        assert server.statuses == {200: 2, 500: 2}
