"""Call the fake upstreams through the sidecar with aiohttp, as a `keyside exec` child in tests.

The script uses only KEYSIDE_TOKEN and the KEYSIDE_URL_* variables, the way a script ported from
OPENAI_API_KEY would. It prints one JSON line per call with the status and the body.
"""

import asyncio
import json
import os

import aiohttp

TIMEOUT = aiohttp.ClientTimeout(total=20)


async def main() -> None:
    token = os.environ["KEYSIDE_TOKEN"]
    openai = os.environ["KEYSIDE_URL_OPENAI"] + "/v1"
    anthropic = os.environ["KEYSIDE_URL_ANTHROPIC"] + "/v1"
    chat = {"model": "fake-model", "messages": [{"role": "user", "content": "hi"}]}

    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        bearer = {"Authorization": f"Bearer {token}"}
        async with session.post(f"{openai}/chat/completions", json=chat, headers=bearer) as response:
            body = await response.json()
            print(json.dumps({"call": "chat", "status": response.status,
                              "text": body["choices"][0]["message"]["content"]}), flush=True)

        async with session.post(f"{openai}/chat/completions", json={**chat, "stream": True},
                                headers=bearer) as response:
            pieces = []
            async for raw_line in response.content:
                line = raw_line.decode().strip()
                if line.startswith("data: ") and line != "data: [DONE]":
                    pieces.append(json.loads(line[len("data: "):])["choices"][0]["delta"]["content"])
            print(json.dumps({"call": "chat_stream", "status": response.status,
                              "content_type": response.headers.get("Content-Type", ""),
                              "pieces": pieces}), flush=True)

        message = {"model": "fake-model", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
        async with session.post(f"{anthropic}/messages", json=message,
                                headers={"x-api-key": token, "anthropic-version": "2023-06-01"}) as response:
            body = await response.json()
            print(json.dumps({"call": "messages", "status": response.status,
                              "text": body["content"][0]["text"]}), flush=True)


asyncio.run(main())
