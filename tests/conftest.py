"""Test-wide settings: no network for model hubs, quiet tokenizers, a fixed thread count for speed."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("GENPREF_TEST", "1")
