from curation.cleaning.adult import AdultFilter
from curation.config import AdultConfig


def test_url_blocklist_covers_subdomains_only():
    f = AdultFilter(AdultConfig(url_blocklist=["bad.example"]))
    assert f.check("any text", "https://www.pornhub.com/x") == "adult_url"
    assert f.check("any text", "http://a.b.bad.example/page") == "adult_url"
    assert f.check("any text", "https://notbad.example/") is None
    assert f.check("any text", "") is None


def test_word_hits_need_count_and_ratio(tmp_path):
    words = tmp_path / "words.txt"
    words.write_text("zorblax\n")
    f = AdultFilter(AdultConfig(word_list=str(words), min_word_hits=3, max_word_ratio=0.01))
    clean = "a product description of a fine lamp " * 20
    assert f.check(clean + " zorblax zorblax") is None  # two incidental hits: kept
    assert f.check(clean + " zorblax zorblax zorblax") == "adult_words"
    assert f.check("porn " * 3 + clean * 100) is None  # below the ratio
