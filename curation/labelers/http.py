"""Any OpenAI-compatible chat endpoint (vLLM, TGI, llama.cpp server, hosted APIs).

Concurrency = ``batch_size`` requests in flight; each request is retried with exponential back-off on
connection errors, timeouts, 429 and 5xx. A request that still fails yields status ``error`` (not cached, so a
later run retries it); an answer outside the two labels yields ``malformed`` (cached and counted). A non-JSON
body (an HTML error page) is an endpoint failure: retried, then ``error``.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from curation.config import LabelerConfig
from curation.labelers.base import Labeler, LabelResult
from curation.relevance import MalformedAnswer, PromptVersion, parse_answer

RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class HttpChatLabeler(Labeler):
    def __init__(self, config: LabelerConfig, sleep=time.sleep):
        if not config.endpoint:
            raise ValueError("labeler.endpoint is required for kind 'http' (e.g. http://localhost:8000/v1)")
        if not config.model:
            raise ValueError("labeler.model is required for kind 'http' (the served model name)")
        self.config = config
        self.url = config.endpoint.rstrip("/") + "/chat/completions"
        self.identity = f"http:{config.model}:chars={config.max_chars}"
        self._sleep = sleep
        self.requests_made = 0

    def _post(self, payload: dict) -> dict:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.config.api_key_env, "")
        if key:
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(
            self.url, data=json.dumps(payload).encode(), headers=headers, method="POST"
        )
        self.requests_made += 1
        with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
            return json.loads(response.read().decode("utf-8"))

    def _label_one(self, text: str, prompt: PromptVersion) -> LabelResult:
        payload = {
            "model": self.config.model,
            "messages": prompt.messages(text[: self.config.max_chars]),
            "temperature": 0.0,
            "max_tokens": self.config.max_new_tokens,
        }
        last_error = ""
        for attempt in range(self.config.max_retries + 1):
            try:
                body = self._post(payload)
            except urllib.error.HTTPError as error:
                last_error = f"HTTP {error.code}"
                if error.code not in RETRYABLE_STATUS:
                    return LabelResult(None, "error", last_error)
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
                last_error = f"{type(error).__name__}: {error}"
            except (json.JSONDecodeError, UnicodeDecodeError):
                # An HTML error page from a proxy or load balancer (often with status 200) is the endpoint
                # failing, not the model answering: retried, and never cached as an answer.
                last_error = "non-JSON response body (an HTML error page?)"
            else:
                try:
                    answer = body["choices"][0]["message"]["content"]
                except (KeyError, IndexError, TypeError):
                    return LabelResult(None, "malformed", f"unexpected response shape: {str(body)[:200]}")
                try:
                    return LabelResult(parse_answer(answer), "ok", answer)
                except MalformedAnswer:
                    return LabelResult(None, "malformed", str(answer))
            if attempt < self.config.max_retries:
                self._sleep(self.config.backoff_s * 2**attempt)
        return LabelResult(None, "error", last_error)

    def label_batch(self, texts: Sequence[str], prompt: PromptVersion) -> list[LabelResult]:
        with ThreadPoolExecutor(max_workers=max(1, self.config.batch_size)) as pool:
            return list(pool.map(lambda t: self._label_one(t, prompt), texts))
