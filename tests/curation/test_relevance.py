import pytest

from curation.relevance import (
    NOT_RELEVANT,
    PROMPT_VERSIONS,
    RELEVANT,
    MalformedAnswer,
    get_prompt,
    parse_answer,
)


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
    assert set(PROMPT_VERSIONS) >= {"v1", "v2"}
    assert get_prompt("v1").definition != get_prompt("v2").definition
    msgs = get_prompt("v2").messages("A doc")
    assert [m["role"] for m in msgs] == ["system", "user"] and "A doc" in msgs[1]["content"]
    with pytest.raises(KeyError, match="v9"):
        get_prompt("v9")
