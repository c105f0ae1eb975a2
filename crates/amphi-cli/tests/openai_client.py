"""OpenAI's Python client (`openai` from PyPI) against `amphi serve`.

Usage: openai_client.py BASE_URL MODEL MESSAGES_JSON MAX_TOKENS
Prints one JSON object: what the client parsed from a chat completion, a streamed chat
completion and a legacy completion. The Rust test (tests/http.rs) checks the values.
"""

import json
import sys

from openai import OpenAI

base, model, messages, max_tokens = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), int(sys.argv[4])
client = OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=120)

chat = client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)
choice = chat.choices[0]

stream = client.chat.completions.create(
    model=model, messages=messages, max_tokens=max_tokens, stream=True
)
deltas, roles, finish = [], [], None
for chunk in stream:
    delta = chunk.choices[0].delta
    if delta.role:
        roles.append(delta.role)
    if delta.content:
        deltas.append(delta.content)
    if chunk.choices[0].finish_reason:
        finish = chunk.choices[0].finish_reason

completion = client.completions.create(model=model, prompt="hello", max_tokens=max_tokens)
models = [m.id for m in client.models.list()]

print(
    json.dumps(
        {
            "content": choice.message.content,
            "role": choice.message.role,
            "finish_reason": choice.finish_reason,
            "usage": chat.usage.model_dump(),
            "streamed": "".join(deltas),
            "stream_chunks": len(deltas),
            "stream_roles": roles,
            "stream_finish_reason": finish,
            "completion_text": completion.choices[0].text,
            "completion_tokens": completion.usage.completion_tokens,
            "models": models,
        }
    )
)
