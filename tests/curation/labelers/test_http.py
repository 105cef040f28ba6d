"""The OpenAI-compatible labeler against a stub server on 127.0.0.1 (no network)."""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from curation.config import LabelerConfig
from curation.labelers import LabelCache, label_documents
from curation.labelers.http import HttpChatLabeler
from curation.relevance import PROMPTS_DIR as PROMPTS
from curation.relevance import get_prompt


class _Stub(BaseHTTPRequestHandler):
    mode = "ok"
    calls = 0
    lock = threading.Lock()

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with _Stub.lock:
            _Stub.calls += 1
            n = _Stub.calls
        doc = body["messages"][1]["content"]
        if _Stub.mode == "flaky" and n % 2 == 1:
            self.send_response(503)
            self.end_headers()
            return
        failures = {
            "error_body": {"error": {"message": "upstream model crashed", "type": "server_error"}},
            "no_choices": {"choices": []},
            "null_content": {"choices": [{"message": {"role": "assistant", "content": None}}]},
        }
        if _Stub.mode == "html":
            payload = b"<html>gateway</html>"
        elif _Stub.mode in failures:
            payload = json.dumps(failures[_Stub.mode]).encode()
        else:
            answer = {
                "ok": "Relevant" if "price" in doc else "Not relevant",
                "flaky": "Relevant",
                "garbage": "Sure! Here is my analysis of the document...",
            }[_Stub.mode]
            payload = json.dumps(
                {"choices": [{"message": {"role": "assistant", "content": answer}}]}
            ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    _Stub.calls = 0
    yield f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    httpd.shutdown()
    httpd.server_close()


def _labeler(endpoint, **kw):
    sleeps = []
    cfg = LabelerConfig(kind="http", model="stub", endpoint=endpoint, batch_size=4, backoff_s=0.5, **kw)
    return HttpChatLabeler(cfg, sleep=sleeps.append), sleeps


TEXTS = ["great price for this laptop", "a poem about the sea", "price list of cables", "chapter one"]


def test_labels_batches_and_caches(server, tmp_path):
    _Stub.mode = "ok"
    labeler, _ = _labeler(server)
    cache = LabelCache(tmp_path / "cache.sqlite")
    results, stats = label_documents(TEXTS, labeler, get_prompt("v1"), cache, batch_size=4)
    assert [r.label for r in results] == [1, 0, 1, 0]
    assert stats.as_dict()["kept"] == 4 and _Stub.calls == 4
    again, stats2 = label_documents(TEXTS, labeler, get_prompt("v1"), cache, batch_size=4)
    assert [r.label for r in again] == [1, 0, 1, 0]
    assert _Stub.calls == 4 and stats2.counts["cache_hits"] == 4  # no document labelled twice
    label_documents(TEXTS[:1], labeler, get_prompt("v2"), cache)  # a new prompt version is a new question
    assert _Stub.calls == 5


def test_retries_with_exponential_backoff(server):
    _Stub.mode = "flaky"
    labeler, sleeps = _labeler(server, max_retries=3)
    results = labeler.label_batch(["doc"], get_prompt("v1"))
    assert results[0].label == 1 and _Stub.calls == 2 and sleeps == [0.5]


@pytest.mark.parametrize("mode", ["garbage", "error_body", "no_choices", "null_content"])
def test_a_200_without_a_label_is_an_error_retried_with_backoff_and_never_cached(server, tmp_path, mode):
    _Stub.mode = mode
    labeler, sleeps = _labeler(server, max_retries=2)
    cache = LabelCache(tmp_path / "c.sqlite")
    results, stats = label_documents(TEXTS, labeler, get_prompt("v1"), cache)
    assert all(r.label is None and r.status == "error" for r in results)
    assert stats.as_dict() == {"cache_hits": 0, "dropped_label_error": 4}
    assert _Stub.calls == 4 * 3 and sorted(sleeps) == [0.5] * 4 + [1.0] * 4  # 2 retries each, backing off
    _Stub.mode = "ok"  # the endpoint recovers: nothing was cached, every document is asked again
    results, stats = label_documents(TEXTS, labeler, get_prompt("v1"), cache)
    assert [r.label for r in results] == [1, 0, 1, 0] and stats.as_dict()["cache_hits"] == 0


def test_a_failing_endpoint_stops_the_label_stage_in_one_line_naming_the_counts(server, tmp_path):
    """Through the label stage and the executor layer, as `rexbert curate` runs it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curation.fetch import fetched_schema
    from curation.labelling import LabelShard
    from rexbert_common.errors import UserError
    from rexbert_common.executors import ExecutorConfig, Stage, run_stages

    _Stub.mode = "null_content"
    rows = [("hobby", i, f"doc{i}", text, -1, "") for i, text in enumerate(TEXTS)]
    (tmp_path / "fetched").mkdir()
    pq.write_table(
        pa.table(dict(zip(fetched_schema().names, zip(*rows))), schema=fetched_schema()),
        tmp_path / "fetched" / "00000.parquet",
    )
    (tmp_path / "audit").mkdir()
    (tmp_path / "audit" / "decision.json").write_text(json.dumps({"prompt_version": "v1"}))
    labeler = {"kind": "http", "model": "stub", "endpoint": server, "max_retries": 1, "backoff_s": 0.01}
    step = LabelShard(
        labeler,
        0.99,
        str(PROMPTS),
        str(tmp_path / "audit"),
        str(tmp_path / "fetched"),
        str(tmp_path / "labels"),
        str(tmp_path / "cache"),
    )
    stage = Stage("label", 1, [step], tmp_path / "label", "fp")
    with pytest.raises(UserError) as caught:
        run_stages([stage], ExecutorConfig(kind="local", workers=1))
    message = str(caught.value)
    assert "\n" not in message
    assert "labels for 0 of 4 documents (0.0%) < labeler.min_coverage 99.0%; 4 failed" in message


def test_html_error_pages_are_endpoint_errors_retried_on_the_next_run(server, tmp_path):
    _Stub.mode = "html"
    labeler, sleeps = _labeler(server, max_retries=1)
    cache = LabelCache(tmp_path / "c.sqlite")
    results, stats = label_documents(TEXTS, labeler, get_prompt("v1"), cache)
    assert [r.status for r in results] == ["error"] * 4 and sleeps == [0.5] * 4  # retried, then given up
    _Stub.mode = "ok"  # the endpoint recovers: nothing was cached, every document is asked again
    results, stats = label_documents(TEXTS, labeler, get_prompt("v1"), cache)
    assert [r.label for r in results] == [1, 0, 1, 0] and stats.as_dict()["cache_hits"] == 0


def test_endpoint_down_is_an_error_count_not_a_crash(tmp_path):
    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    labeler, sleeps = _labeler(f"http://127.0.0.1:{port}/v1", max_retries=2, timeout_s=2)
    cache = LabelCache(tmp_path / "c.sqlite")
    results, stats = label_documents(TEXTS[:2], labeler, get_prompt("v1"), cache)
    assert [r.status for r in results] == ["error", "error"]
    assert stats.as_dict()["dropped_label_error"] == 2
    assert sorted(sleeps) == [0.5, 0.5, 1.0, 1.0]
    assert (
        cache.get_many([LabelCache.key(labeler.identity, get_prompt("v1").cache_key, TEXTS[0])]) == {}
    )  # errors are retried later


def test_missing_endpoint_is_a_config_error():
    with pytest.raises(ValueError, match="labeler.endpoint"):
        HttpChatLabeler(LabelerConfig(kind="http", model="m"))
