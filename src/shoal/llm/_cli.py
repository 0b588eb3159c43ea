"""``shoal llm REQUESTS.jsonl --out RESULTS.jsonl``: the command line of ``shoal.llm``.

``add_parser(commands)`` adds the subcommand to ``shoal``'s parser and ``run(args)`` runs it;
``main(argv)`` is ``python -m shoal.llm``. Exit codes: 0 every request succeeded, 1 some failed
or were not sent (all are in the results file), 2 bad usage or input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["add_parser", "main", "run"]

OK, SOME_FAILED, USAGE, INTERRUPTED = 0, 1, 2, 130

EXAMPLES = """\
examples:
  shoal llm requests.jsonl --out results.jsonl --rpm 500 --tpm 200000
  shoal llm requests.jsonl --out results.jsonl --base-url http://localhost:8000/v1
  shoal llm requests.jsonl --price-in 0.15 --price-out 0.60 --dry-run
  shoal llm requests.jsonl --out results.jsonl --max-cost 5 --price-in 0.15 --price-out 0.60 \\
      --journal llm.db

Input lines: OpenAI batch lines ({"custom_id", "method", "url", "body"}) or bare request bodies
(chat completions, embeddings). The API key is read from $OPENAI_API_KEY (--api-key-env NAME for
another variable) and is never written anywhere. Without --rpm/--tpm the concurrency adapts to
the server. With --journal, running the same command again resumes.

exit codes: 0 all requests succeeded, 1 some failed or were not sent (every request has a line
in the results), 2 bad usage or input, 130 interrupted."""


def _positive(kind: type[float] | type[int]) -> Any:
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r}: must be > 0")
        return value

    return parse


def _price(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a price (USD per 1M tokens)") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a price must be >= 0")
    return value


def add_parser(commands: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> None:
    """Add ``llm`` to a subparsers object (``shoal``'s, or ``python -m shoal.llm``'s)."""
    parser = commands.add_parser(
        "llm",
        parents=list(parents),
        help="send a JSONL file of chat/embedding requests to an OpenAI-compatible API",
        description="Send every request of REQUESTS (JSON Lines) under rate limits and a "
        "budget; write one result per request, in input order.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure(parser)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("requests", metavar="REQUESTS.jsonl", help="the requests, one per line")
    parser.add_argument("--out", metavar="RESULTS.jsonl", help="write the results here")
    parser.add_argument(
        "--base-url", metavar="URL", help="the API's base URL (default $OPENAI_BASE_URL or OpenAI)"
    )
    parser.add_argument(
        "--api-key-env",
        metavar="NAME",
        default="OPENAI_API_KEY",
        help="environment variable holding the API key (default OPENAI_API_KEY)",
    )
    parser.add_argument("--model", help="model for request bodies that name none")
    parser.add_argument("--rpm", type=_positive(float), metavar="N", help="requests per minute")
    parser.add_argument("--tpm", type=_positive(float), metavar="N", help="tokens per minute")
    parser.add_argument(
        "--concurrency", type=_positive(int), metavar="N", help="requests in flight at most"
    )
    parser.add_argument(
        "--max-cost", type=_positive(float), metavar="USD", help="stop admitting at this cost"
    )
    parser.add_argument("--price-in", type=_price, metavar="USD", help="USD per 1M prompt tokens")
    parser.add_argument(
        "--price-out", type=_price, metavar="USD", help="USD per 1M completion tokens"
    )
    parser.add_argument(
        "--journal",
        nargs="?",
        const="",
        metavar="PATH",
        help="record every request in an SQLite journal to resume (default path: OUT.db)",
    )
    parser.add_argument(
        "--timeout", type=_positive(float), default=600.0, metavar="S", help="seconds per request"
    )
    parser.add_argument(
        "--retries", type=int, default=5, metavar="N", help="re-tries after failures (default 5)"
    )
    parser.add_argument(
        "--encoding",
        choices=("o200k_base", "cl100k_base", "estimate"),
        help="token encoding for the limits (default: from the model)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="count tokens and cost, send nothing"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress or summary")


def run(args: argparse.Namespace) -> int:
    """Run ``shoal llm`` with parsed arguments; return the exit code."""
    from ._api import estimate
    from ._api import run as run_llm
    from ._requests import LLMInputError

    if (args.price_in is None) != (args.price_out is None):
        print("shoal: error: give both --price-in and --price-out", file=sys.stderr)
        return USAGE
    if args.retries < 0:
        print("shoal: error: --retries must be >= 0", file=sys.stderr)
        return USAGE
    try:
        if args.dry_run:
            found = estimate(
                args.requests,
                model=args.model,
                price_in=args.price_in,
                price_out=args.price_out,
                rpm=args.rpm,
                tpm=args.tpm,
                encoding=args.encoding,
            )
            print(found)
            return OK
        journal = args.journal
        if journal == "":
            if not args.out:
                print("shoal: error: --journal without a path needs --out", file=sys.stderr)
                return USAGE
            journal = f"{args.out}.db"
        result = run_llm(
            args.requests,
            out=args.out,
            base_url=args.base_url,
            api_key_env=args.api_key_env,
            model=args.model,
            rpm=args.rpm,
            tpm=args.tpm,
            concurrency=args.concurrency,
            max_cost=args.max_cost,
            price_in=args.price_in,
            price_out=args.price_out,
            journal=journal,
            timeout=args.timeout,
            retries=args.retries,
            encoding=args.encoding,
            progress=None if args.quiet else True,
        )
    except (LLMInputError, ImportError) as exc:
        print(f"shoal: error: {exc}", file=sys.stderr)
        return USAGE
    except KeyboardInterrupt:
        print("\nshoal: interrupted", file=sys.stderr)
        return INTERRUPTED
    if not args.quiet:
        print(result.summary(), file=sys.stderr)
    return OK if result.ok else SOME_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m shoal.llm REQUESTS.jsonl ...``."""
    parser = argparse.ArgumentParser(
        prog="python -m shoal.llm",
        description="Send every request of REQUESTS (JSON Lines) to an OpenAI-compatible API.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure(parser)
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else USAGE
    return run(args)
