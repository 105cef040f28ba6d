"""Any OpenAI-compatible chat endpoint (vLLM, TGI, llama.cpp server, hosted APIs).

Concurrency = ``batch_size`` requests in flight. Every response that does not carry a parsable label is an
error for that document, retried with exponential back-off (``backoff_s * 2**attempt``): connection errors,
timeouts, 429 and 5xx, a non-JSON body (an HTML error page), and a 200 whose body is an error object, has no
choices or a null/empty content (what gateways return when the model behind them failed), or an answer that
is not one of the two labels. After ``max_retries`` the document's result is ``error``: never cached, so a
later run asks again. Client errors other than 408/409/425/429 are not retried (the request itself is wrong).
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


class _NotALabel(ValueError):
    """A 200 response that carries no parsable label."""


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

    @property
    def model_identity(self) -> str:
        return f"http:{self.url}|{self.config.model}"

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
                return LabelResult(*self._answer(self._post(payload)))
            except urllib.error.HTTPError as error:
                last_error = f"HTTP {error.code}"
                if error.code not in RETRYABLE_STATUS:
                    return LabelResult(None, "error", last_error)
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as error:
                last_error = f"{type(error).__name__}: {error}"
            except (json.JSONDecodeError, UnicodeDecodeError):
                last_error = "non-JSON response body (an HTML error page?)"
            except _NotALabel as error:
                last_error = str(error)
            if attempt < self.config.max_retries:
                self._sleep(self.config.backoff_s * 2**attempt)
        return LabelResult(None, "error", last_error)

    @staticmethod
    def _answer(body) -> tuple[int, str, str]:
        """(label, "ok", answer) from a chat-completions body; raises _NotALabel for anything else."""
        if not isinstance(body, dict):
            raise _NotALabel(f"response is not an object: {str(body)[:200]}")
        if body.get("error"):
            raise _NotALabel(f"error body: {str(body['error'])[:200]}")
        choices = body.get("choices")
        if not isinstance(choices, list) or not choices:
            raise _NotALabel(f"no choices: {str(body)[:200]}")
        message = choices[0].get("message") if isinstance(choices[0], dict) else None
        answer = message.get("content") if isinstance(message, dict) else None
        if not isinstance(answer, str) or not answer.strip():
            raise _NotALabel(f"no content: {str(choices[0])[:200]}")
        try:
            return parse_answer(answer), "ok", answer
        except MalformedAnswer:
            raise _NotALabel(f"not a label: {answer[:200]!r}") from None

    def label_batch(self, texts: Sequence[str], prompt: PromptVersion) -> list[LabelResult]:
        with ThreadPoolExecutor(max_workers=max(1, self.config.batch_size)) as pool:
            return list(pool.map(lambda t: self._label_one(t, prompt), texts))
