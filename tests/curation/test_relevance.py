import pytest

from curation.relevance import (
    NOT_RELEVANT,
    RELEVANT,
    MalformedAnswer,
    get_prompt,
    parse_answer,
)
from rexbert_common.errors import UserError


@pytest.mark.parametrize(
    "answer, label",
    [
        ("Relevant", RELEVANT),
        (" relevant.\n", RELEVANT),
        ("Not relevant", NOT_RELEVANT),
        ("NOT RELEVANT", NOT_RELEVANT),
        ("Irrelevant", NOT_RELEVANT),
    ],
)
def test_clean_answers_parse(answer, label):
    assert parse_answer(answer) == label


@pytest.mark.parametrize(
    "answer", ["", "Yes", "Relevant? maybe not", "I think it is relevant", "Relevant Not", None, "relevantly"]
)
def test_ambiguous_answers_are_malformed_never_coerced(answer):
    with pytest.raises(MalformedAnswer):
        parse_answer(answer)


def test_prompt_versions_are_distinct_and_render_chat_messages():
    assert get_prompt("v1").definition != get_prompt("v2").definition
    msgs = get_prompt("v2").messages("A doc")
    assert [m["role"] for m in msgs] == ["system", "user"] and "A doc" in msgs[1]["content"]
    with pytest.raises(UserError, match="v9"):
        get_prompt("v9")


def test_prompts_are_read_from_files_and_editing_a_file_changes_its_cache_key(tmp_path):
    from curation.relevance import PROMPTS_DIR, load_prompt

    text = (PROMPTS_DIR / "v1.yaml").read_text()
    (tmp_path / "v1.yaml").write_text(text)
    same = load_prompt(tmp_path, "v1")
    assert same == get_prompt("v1") and same.cache_key == get_prompt("v1").cache_key
    (tmp_path / "v1.yaml").write_text(text.replace("shopping guides", "gift guides"))
    edited = load_prompt(tmp_path, "v1")
    assert "gift guides" in edited.definition and edited.cache_key != same.cache_key
    (tmp_path / "v3.yaml").write_text("definition: only a definition\n")
    with pytest.raises(UserError, match="missing"):
        load_prompt(tmp_path, "v3")
