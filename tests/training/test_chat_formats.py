"""chat.py with OpenAI's full chat format (weight, name, tools, tool calls) and prompt/completion records."""

from __future__ import annotations

import copy
import json
import re

import pytest

from sparsegrad_core.chat import IGNORE_INDEX, chat_segments, encode_chat, encode_prompt_completion
from sparsegrad_core.tokenization import tokenize_dataset
from sparsegrad_data import parse_dataset_bytes

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""A ChatML-like template that ignores names, tools and tool calls (the MiniLM tokenizer has none)."""

TOOLS_TEMPLATE = (
    "{% if tools %}<|tools|>{% for t in tools %}{{ t['function']['name'] }};{% endfor %}{{ '\\n' }}{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}{% if m.get('name') %} {{ m['name'] }}{% endif %}{{ '\\n' }}"
    "{{ m['content'] }}{% for c in m.get('tool_calls') or [] %}"
    "<call>{{ c['function']['name'] }} {{ c['function']['arguments'] | tojson }}</call>{% endfor %}"
    "<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""A ChatML-like template that renders tool definitions, participant names and tool calls."""

TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
CALL = {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
TOOL_CHAT = [
    {"role": "user", "content": "Weather in Oslo?", "name": "ann"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]},
    {"role": "tool", "content": "Four degrees.", "tool_call_id": "c1"},
    {"role": "assistant", "content": "It is four degrees."},
]
WEIGHTED = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Name a colour."},
    {"role": "assistant", "content": "Blue.", "weight": 0},
    {"role": "user", "content": "Another one?"},
    {"role": "assistant", "content": "Green, of course.", "weight": 1},
]


def _with_template(tokenizer, template: str):
    tok = copy.deepcopy(tokenizer)
    tok.chat_template = template
    return tok


def _learned(tokenizer, ids: list[int], labels: list[int]) -> str:
    return tokenizer.decode([t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE_INDEX])


@pytest.mark.parametrize("template", [CHAT_TEMPLATE, None], ids=["template", "no-template"])
def test_weight_0_assistant_turns_are_rendered_but_not_learned(tokenizer, template) -> None:
    tok = _with_template(tokenizer, template) if template else copy.deepcopy(tokenizer)
    tok.eos_token = "[SEP]"
    ids, labels = encode_chat(WEIGHTED, tok, max_seq_length=256)
    all_ids, all_labels = encode_chat([{**m, "weight": 1} for m in WEIGHTED], tok, max_seq_length=256)
    assert ids == all_ids  # the weight-0 turn is still in the context
    assert "blue" in tok.decode(ids)
    assert not [
        i for i, (a, b) in enumerate(zip(labels, all_labels, strict=True)) if a != b and a != IGNORE_INDEX
    ]
    unlearned = [t for t, a, b in zip(ids, labels, all_labels, strict=True) if a == IGNORE_INDEX != b]
    assert tok.decode(unlearned).startswith("blue.")  # exactly the weight-0 turn lost its labels
    assert "green" not in tok.decode(unlearned)
    assert _learned(tok, ids, labels).startswith("green, of course.")


def test_name_reaches_the_template_and_the_plain_format(tokenizer) -> None:
    messages = [{"role": "user", "content": "Hi.", "name": "bob"}, {"role": "assistant", "content": "Hello."}]
    full = "".join(s for s, _ in chat_segments(messages, _with_template(tokenizer, TOOLS_TEMPLATE)))
    assert full.startswith("<|im_start|>user bob\nHi.")
    plain = "".join(s for s, _ in chat_segments(messages, tokenizer))
    assert plain.startswith("<|user|> bob\nHi.\n")


def test_tools_and_tool_calls_reach_the_template(tokenizer) -> None:
    tok = _with_template(tokenizer, TOOLS_TEMPLATE)
    segments = chat_segments(TOOL_CHAT, tok, tools=[TOOL])
    full = "".join(s for s, _ in segments)
    assert full.startswith("<|tools|>get_weather;\n<|im_start|>user ann\n")
    assert '<call>get_weather {"city": "Oslo"}</call>' in full  # arguments decoded to a dict for the template
    trained = [s for s, is_trained in segments if is_trained]
    assert trained[0].startswith("<call>get_weather") and "Four degrees" not in "".join(trained)
    ids, labels = encode_chat(TOOL_CHAT, tok, max_seq_length=512, tools=[TOOL])
    learned = _learned(tok, ids, labels)
    assert "get _ weather" in learned and "it is four degrees." in learned and "oslo?" not in learned


def test_developer_becomes_system_for_templates_that_do_not_know_it(tokenizer) -> None:
    messages = [{"role": "developer", "content": "Be brief."}, {"role": "assistant", "content": "Ok."}]
    full = "".join(s for s, _ in chat_segments(messages, _with_template(tokenizer, CHAT_TEMPLATE)))
    assert full.startswith("<|im_start|>system\nBe brief.")


def test_tools_without_support_raise_naming_the_model(tokenizer) -> None:
    name = re.escape(tokenizer.name_or_path)
    with pytest.raises(ValueError, match=f"{name} has no chat template"):
        encode_chat(TOOL_CHAT, tokenizer, 256)
    plain_template = _with_template(tokenizer, CHAT_TEMPLATE)
    with pytest.raises(ValueError, match=f"{name} does not render tool definitions"):
        encode_chat(TOOL_CHAT, plain_template, 256, tools=[TOOL])
    with pytest.raises(ValueError, match=f"{name} does not render assistant tool calls"):
        encode_chat(TOOL_CHAT, plain_template, 256)


def test_a_failing_template_raises_a_value_error_naming_the_model(tokenizer) -> None:
    tok = _with_template(tokenizer, "{{ raise_exception('no system role') }}")
    with pytest.raises(
        ValueError, match=f"{re.escape(tokenizer.name_or_path)} cannot render.*no system role"
    ):
        encode_chat(WEIGHTED, tok, 256)


def test_prompt_completion_learns_only_the_completion_and_eos(tokenizer) -> None:
    tok = copy.deepcopy(tokenizer)
    tok.eos_token = "[SEP]"
    ids, labels = encode_prompt_completion("Two plus two is", " four.", tok, max_seq_length=64)
    assert ids == tok("Two plus two is four.[SEP]", add_special_tokens=False)["input_ids"]
    n_prompt = len(tok("Two plus two is", add_special_tokens=False)["input_ids"])
    assert labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    assert tok.decode(labels[n_prompt:]) == "four. [SEP]"


def test_tokenize_dataset_handles_every_causal_lm_record_kind(tokenizer) -> None:
    tok = _with_template(tokenizer, TOOLS_TEMPLATE)
    lines = [
        {"prompt": "Two plus two is", "completion": " four."},
        {"messages": WEIGHTED},
        {"messages": TOOL_CHAT, "tools": [TOOL]},
    ]
    data = "".join(json.dumps(line) + "\n" for line in lines).encode()
    ds = parse_dataset_bytes(data, "mixed.jsonl")
    tokenized = tokenize_dataset(ds, tok, max_seq_length=256)
    assert len(tokenized) == 3 and tokenized.dropped == 0
    assert tok.decode([t for t in tokenized.rows[0]["labels"] if t != IGNORE_INDEX]) == "four."
    assert "get _ weather" in tok.decode([t for t in tokenized.rows[2]["labels"] if t != IGNORE_INDEX])
    with pytest.raises(ValueError, match="does not render tool definitions"):
        tokenize_dataset(ds, _with_template(tokenizer, CHAT_TEMPLATE), max_seq_length=256)


@pytest.mark.slow
def test_smollm2_chat_template_trains_weighted_turns_and_refuses_tools() -> None:
    from sparsegrad_core.loading import load_tokenizer

    tok = load_tokenizer("smollm2-135m")
    ids, labels = encode_chat(WEIGHTED, tok, max_seq_length=256)
    assert _learned(tok, ids, labels).startswith("Green, of course.<|im_end|>")  # the weight-0 "Blue." is not
    with pytest.raises(ValueError, match=re.escape(tok.name_or_path)):
        encode_chat(TOOL_CHAT, tok, 256, tools=[TOOL])
