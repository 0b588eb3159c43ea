"""``shoal.llm``: fan out many requests to an OpenAI-compatible API (the ``shoal[llm]`` extra).

::

    result = shoal.llm.run("requests.jsonl", out="results.jsonl", rpm=500, tpm=200_000,
                           price_in=0.15, price_out=0.60, max_cost=5.0, journal="llm.db")
    print(result.summary())

The same from the command line: ``shoal llm requests.jsonl --out results.jsonl ...`` (or
``python -m shoal.llm``). ``shoal.llm.testing.OpenAIServer`` is a real server on loopback for
tests. How a request goes is described in ``shoal.llm._api``.
"""

from ._api import Estimate, LLMRun, arun, estimate, run
from ._requests import LLMInputError, read_requests
from ._tokens import TokenCounter

__all__ = [
    "Estimate",
    "LLMInputError",
    "LLMRun",
    "TokenCounter",
    "arun",
    "estimate",
    "read_requests",
    "run",
]
