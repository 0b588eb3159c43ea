"""``python -m shoal.llm REQUESTS.jsonl --out RESULTS.jsonl ...`` (the same as ``shoal llm``)."""

import sys

from ._cli import main

sys.exit(main())
