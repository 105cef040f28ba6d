"""The label caches: keyed by what a label depends on; the label stage's cache partitioned by input file."""

from curation.labelers.base import FileLabelCache, LabelCache, LabelResult


def _labels(n: int) -> list[tuple[str, LabelResult]]:
    return [(f"key{i}", LabelResult(i % 2, "ok", "raw")) for i in range(n)]


def test_each_input_file_holds_the_labels_of_its_documents(tmp_path):
    """A key carried by documents of two files is stored with both, so either file alone -- what a task of
    another split opens -- is complete; errors are not stored; reading creates no file."""
    routes = {"key0": {"a.jsonl"}, "key1": {"a.jsonl", "b.jsonl"}, "key2": {"b.jsonl"}, "key3": {"c.jsonl"}}
    cache = FileLabelCache(tmp_path, routes)
    assert cache.get_many(list(routes)) == {}
    assert not list(tmp_path.rglob("*.sqlite"))
    cache.put_many([*_labels(3), ("key3", LabelResult(None, "error", "timeout"))])
    cache.close()
    for file, keys in (("a.jsonl", {"key0", "key1"}), ("b.jsonl", {"key1", "key2"})):
        alone = FileLabelCache(tmp_path, {k: {file} for k in routes})
        assert set(alone.get_many(list(routes))) == keys
        alone.close()
    assert not FileLabelCache(tmp_path, routes).path("c.jsonl").exists()


def test_a_run_over_more_files_than_open_connections_keeps_every_label(tmp_path):
    n = FileLabelCache.MAX_OPEN * 2 + 5
    routes = {f"key{i}": {f"file{i}"} for i in range(n)}
    cache = FileLabelCache(tmp_path, routes)
    cache.put_many(_labels(n))
    assert len(cache._open) == FileLabelCache.MAX_OPEN
    assert cache.get_many(list(routes)) == dict(_labels(n))
    cache.close()


def test_labels_of_other_caches_are_read_only(tmp_path):
    audit = LabelCache(tmp_path / "audit.sqlite")
    audit.put_many(_labels(1))
    audit.close()
    routes = {"key0": {"a"}, "key1": {"a"}}
    cache = FileLabelCache(tmp_path / "by_file", routes, read_also=[tmp_path / "audit.sqlite"])
    assert cache.get_many(["key0", "key1"]) == dict(_labels(1))
    cache.put_many(_labels(2))
    cache.close()
    audit = LabelCache(tmp_path / "audit.sqlite")
    assert set(audit.get_many(["key0", "key1"])) == {"key0"}
    audit.close()
