"""Child of `keyside exec` in tests: call the fake upstreams through the official Python SDKs.

This is the recipe from docs/recipes.md: only `base_url` and `api_key` differ from a script
that reads OPENAI_API_KEY or ANTHROPIC_API_KEY. Prints one JSON line per call.
"""

import json
import os

import anthropic
import openai

token = os.environ["KEYSIDE_TOKEN"]

client = openai.OpenAI(base_url=os.environ["KEYSIDE_URL_OPENAI"] + "/v1", api_key=token, max_retries=0,
                       timeout=20)
completion = client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
print(json.dumps({"call": "chat", "text": completion.choices[0].message.content}), flush=True)

stream = client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}],
                                        stream=True)
pieces = [chunk.choices[0].delta.content for chunk in stream if chunk.choices and chunk.choices[0].delta.content]
print(json.dumps({"call": "chat_stream", "pieces": pieces}), flush=True)

claude = anthropic.Anthropic(base_url=os.environ["KEYSIDE_URL_ANTHROPIC"], api_key=token, max_retries=0,
                             timeout=20)
message = claude.messages.create(model="fake-model", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
print(json.dumps({"call": "messages", "text": message.content[0].text}), flush=True)
