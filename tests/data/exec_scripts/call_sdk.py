"""Call the fake upstreams through the official Python SDKs, as a `keyside exec` child in tests.

Usage: call_sdk.py explicit | environment
  explicit     pass base_url and api_key from KEYSIDE_URL_* and KEYSIDE_TOKEN to the clients
  environment  build the clients with no arguments, as an unchanged script does. The caller sets
               OPENAI_BASE_URL, OPENAI_API_KEY, ANTHROPIC_BASE_URL and ANTHROPIC_API_KEY.

The two modes are the recipes from docs/recipes.md. The script prints one JSON line per call.
"""

import json
import os
import sys

import anthropic
import openai

if sys.argv[1] == "explicit":
    token = os.environ["KEYSIDE_TOKEN"]
    client = openai.OpenAI(base_url=os.environ["KEYSIDE_URL_OPENAI"] + "/v1", api_key=token)
    claude = anthropic.Anthropic(base_url=os.environ["KEYSIDE_URL_ANTHROPIC"], api_key=token)
else:
    client = openai.OpenAI()
    claude = anthropic.Anthropic()
# No retries, so a failure shows at once. The timeout keeps a broken run from hanging the test.
client = client.with_options(max_retries=0, timeout=20)
claude = claude.with_options(max_retries=0, timeout=20)

completion = client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
print(json.dumps({"call": "chat", "text": completion.choices[0].message.content}), flush=True)

stream = client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}],
                                        stream=True)
pieces = [chunk.choices[0].delta.content for chunk in stream if chunk.choices and chunk.choices[0].delta.content]
print(json.dumps({"call": "chat_stream", "pieces": pieces}), flush=True)

message = claude.messages.create(model="fake-model", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
print(json.dumps({"call": "messages", "text": message.content[0].text}), flush=True)
