import copy

import pytest

from agent.chat_format import ChatFormat


@pytest.fixture(params=["smollm2", "qwen2.5"])
def fmt(request, tokenizer):
    if request.param == "smollm2":
        return ChatFormat(tokenizer)
    from trl.chat_template_utils import qwen2_5_chat_template

    tok = copy.deepcopy(tokenizer)
    tok.chat_template = qwen2_5_chat_template
    return ChatFormat(tok)


def test_tool_support_is_detected(tokenizer):
    from trl.chat_template_utils import qwen2_5_chat_template

    assert not ChatFormat(tokenizer).native_tool_role
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = qwen2_5_chat_template
    qwen = ChatFormat(tok)
    assert qwen.native_tool_role and qwen.native_tools


@pytest.mark.parametrize("closed", [True, False])
def test_inserted_segment_continues_a_conversation_exactly(fmt, closed):
    """prompt + model turn + inserted ids == the template's rendering of the whole conversation."""
    tok = fmt.tokenizer
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 6*7?"}]
    prompt = fmt.prompt_ids(messages)
    reply = "<tool_call>{\"name\": \"python\", \"arguments\": {\"code\": \"print(6*7)\"}}</tool_call>"
    model_ids = fmt.encode(reply) + ([tok.convert_tokens_to_ids("<|im_end|>")] if closed else [])
    observation = fmt.observation_messages(["42"])
    inserted = fmt.insert_ids(observation, model_closed_turn=closed)
    whole = tok.decode(prompt + model_ids + inserted)
    expected = tok.apply_chat_template(
        messages + [{"role": "assistant", "content": reply}] + observation,
        tokenize=False, add_generation_prompt=True,
    )
    assert whole == expected
    assert "42" in tok.decode(inserted)
    assert tok.decode(inserted).rstrip().endswith("assistant")


def test_observations_use_the_tool_role_only_where_the_template_has_one(fmt):
    messages = fmt.observation_messages(["a", "b"])
    if fmt.native_tool_role:
        assert [m["role"] for m in messages] == ["tool", "tool"]
    else:
        assert len(messages) == 1 and messages[0]["role"] == "user"
        assert messages[0]["content"].count("<tool_response>") == 2


def test_template_without_chat_support_is_a_clear_error(tokenizer):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = None
    with pytest.raises(ValueError, match="no chat template"):
        ChatFormat(tok)
