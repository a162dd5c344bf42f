"""`keyside exec` end to end: the real CLI, host, sidecar and fake upstreams on 127.0.0.1.

A child program calls fake OpenAI-compatible and Anthropic-style upstreams through the sidecar
with its scoped token. The tests check that the upstream receives the real key, that the child's
environment, argv and output never contain it, that exit codes and signals pass through, and
that killing keyside exec leaves no sidecar behind.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import shlex
import shutil
import signal
import string
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import need
from keyside.manifest import load_manifest
from keyside.vault import Vault
from keyside.vault.file_store import MIN_SCRYPT_N, FileStore
from upstreams import UpstreamServer

DATA = Path(__file__).parent / "data"
SCRIPTS = DATA / "exec_scripts"
TEMPLATE = DATA / "exec_app" / "keyside.toml.template"

OPENAI_KEY = "sk-exec-e2e-openai-5f2c1a9be07d4c61"
ANTHROPIC_KEY = "sk-ant-exec-e2e-93d8e4a7c2b1f065"
PASSPHRASE = "exec-test-passphrase"
# Upper bound for one `keyside exec` run; a run takes a few seconds (Python, sidecar start, child).
RUN_TIMEOUT_S = 60.0
# Upper bound for a single expected event (a line of output, a process exit).
STEP_TIMEOUT_S = 20.0
SIDECAR_MODULE = "keyside.sidecar"

pytestmark = pytest.mark.skipif(os.name != "posix", reason="the end-to-end tests use POSIX signals and /proc")


@dataclass
class ExecApp:
    folder: Path
    vault_file: Path
    state_home: Path
    openai: UpstreamServer
    anthropic: UpstreamServer

    def args(self, *extra: str) -> list[str]:
        return ["--app", str(self.folder), "--vault", "file", "--vault-file", str(self.vault_file), *extra]

    def env(self, **extra: str) -> dict[str, str]:
        env = {name: value for name, value in os.environ.items() if not name.startswith("KEYSIDE_URL")}
        env.pop("KEYSIDE_TOKEN", None)
        env.update({"KEYSIDE_VAULT_PASSPHRASE": PASSPHRASE, "PYTHONUNBUFFERED": "1",
                    "XDG_STATE_HOME": str(self.state_home)})
        env.update(extra)
        return env

    def log_text(self) -> str:
        texts = [path.read_text("utf-8", "replace") for path in self.state_home.rglob("*") if path.is_file()]
        return "\n".join(texts)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]


def write_manifest(folder: Path, openai_origin: str, anthropic_origin: str) -> None:
    text = string.Template(TEMPLATE.read_text()).substitute(openai_origin=openai_origin,
                                                            anthropic_origin=anthropic_origin)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "keyside.toml").write_text(text)


@pytest.fixture
async def exec_app(tmp_path: Path) -> AsyncIterator[ExecApp]:
    openai = await UpstreamServer(OPENAI_KEY).start()
    anthropic = await UpstreamServer(ANTHROPIC_KEY).start()
    folder = tmp_path / "app"
    write_manifest(folder, openai.origin, anthropic.origin)

    vault_file = tmp_path / "vault.enc"
    vault = Vault(load_manifest(folder), FileStore(vault_file, PASSPHRASE, scrypt_n=MIN_SCRYPT_N))
    vault.set("OPENAI_API_KEY", OPENAI_KEY)
    vault.set("ANTHROPIC_API_KEY", ANTHROPIC_KEY)

    yield ExecApp(folder, vault_file, tmp_path / "state", openai, anthropic)
    await openai.close()
    await anthropic.close()


@pytest.fixture
def keyless_app(tmp_path: Path) -> Iterator[list[str]]:
    """--app and --vault arguments for runs that need no key (only the keyless service)."""
    folder = tmp_path / "keyless-app"
    write_manifest(folder, "http://127.0.0.1:9", "http://127.0.0.1:9")
    yield ["--app", str(folder), "--vault", "memory"]


async def keyside_exec(args: list[str], env: dict[str, str] | None = None) -> Result:
    # Every run here starts in a new session without a controlling terminal, so keyside exec
    # relays the tests' signals the same way whether or not pytest itself runs in a terminal.
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "keyside", "exec", *args, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), RUN_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    return Result(process.returncode or 0, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"))


def python(script: str, *args: str) -> list[str]:
    return [sys.executable, str(SCRIPTS / script), *args]


# ---- calls through the sidecar -------------------------------------------------------------------

EXPECTED_PIECES = ["Hello", " from", " the", " loopback", " model."]


async def test_exec_aiohttp_child_calls_upstreams(exec_app: ExecApp, tmp_path: Path) -> None:
    report_file = tmp_path / "report.json"
    command = (f"{sys.executable} {SCRIPTS / 'report.py'} {report_file} "
               f"&& {sys.executable} {SCRIPTS / 'call_aiohttp.py'}")
    result = await keyside_exec(exec_app.args("--service", "openai,anthropic", "--", "sh", "-c", command),
                                exec_app.env(OPENAI_API_KEY=OPENAI_KEY))
    assert result.returncode == 0, result.stderr

    calls = {line["call"]: line for line in result.json_lines()}
    assert calls["chat"] == {"call": "chat", "status": 200, "text": "Hello from the loopback model."}
    assert calls["chat_stream"]["status"] == 200
    assert calls["chat_stream"]["content_type"].startswith("text/event-stream")
    assert calls["chat_stream"]["pieces"] == EXPECTED_PIECES
    assert calls["messages"] == {"call": "messages", "status": 200, "text": "Hello from the loopback model."}

    # The upstreams saw the real keys, injected by the sidecar, and never the child's token.
    token = json.loads(report_file.read_text())["environ"]["KEYSIDE_TOKEN"]
    chats = [r for r in exec_app.openai.requests if r.path == "/v1/chat/completions"]
    assert len(chats) == 2
    assert all(r.header("Authorization") == f"Bearer {OPENAI_KEY}" for r in chats)
    messages = [r for r in exec_app.anthropic.requests if r.path == "/v1/messages"]
    assert len(messages) == 1
    assert messages[0].header("x-api-key") == ANTHROPIC_KEY
    assert not exec_app.openai.received(token)
    assert not exec_app.anthropic.received(token)
    assert not exec_app.openai.received(ANTHROPIC_KEY)
    assert not exec_app.anthropic.received(OPENAI_KEY)

    # No key in anything the child printed, nor the token in what keyside printed or logged.
    for text in (result.stdout, result.stderr, exec_app.log_text()):
        assert OPENAI_KEY not in text
        assert ANTHROPIC_KEY not in text
        assert token not in text
    assert "OPENAI_API_KEY is not passed to the command" in result.stderr


# The environment recipe from docs/recipes.md: an unchanged script whose SDK clients read these.
SDK_ENV_RECIPE = ('OPENAI_BASE_URL="$KEYSIDE_URL_OPENAI/v1" OPENAI_API_KEY="$KEYSIDE_TOKEN" '
                  'ANTHROPIC_BASE_URL="$KEYSIDE_URL_ANTHROPIC" ANTHROPIC_API_KEY="$KEYSIDE_TOKEN" '
                  'exec "$0" "$@"')


@pytest.mark.parametrize("mode", ["explicit", "environment"])
async def test_exec_sdk_child_calls_upstreams(exec_app: ExecApp, mode: str) -> None:
    # find_spec, not importorskip: importing the SDKs here would cost seconds and test nothing.
    for sdk in ("openai", "anthropic"):
        if importlib.util.find_spec(sdk) is None:
            pytest.skip(f"the {sdk} package is not installed (pip install -e '.[test]')")
    command = python("call_sdk.py", mode)
    if mode == "environment":
        command = ["sh", "-c", SDK_ENV_RECIPE, *command]
    # The parent's own OPENAI_API_KEY is the real key; the recipe replaces it with the token.
    result = await keyside_exec(exec_app.args("--", *command), exec_app.env(OPENAI_API_KEY=OPENAI_KEY))
    assert result.returncode == 0, result.stderr

    calls = {line["call"]: line for line in result.json_lines()}
    assert calls["chat"]["text"] == "Hello from the loopback model."
    assert calls["chat_stream"]["pieces"] == EXPECTED_PIECES
    assert calls["messages"]["text"] == "Hello from the loopback model."

    chats = [r for r in exec_app.openai.requests if r.path == "/v1/chat/completions"]
    assert [r.header("Authorization") for r in chats] == [f"Bearer {OPENAI_KEY}"] * 2
    messages = [r for r in exec_app.anthropic.requests if r.path == "/v1/messages"]
    assert [r.header("x-api-key") for r in messages] == [ANTHROPIC_KEY]
    for text in (result.stdout, result.stderr):
        assert OPENAI_KEY not in text
        assert ANTHROPIC_KEY not in text


async def test_exec_curl_recipe(exec_app: ExecApp) -> None:
    need(shutil.which("curl") is not None, "curl is needed for the curl recipe")
    # The recipe from docs/recipes.md: the header comes from stdin, so the token is not in curl's argv.
    recipe = ('printf "Authorization: Bearer %s\\n" "$KEYSIDE_TOKEN" '
              '| curl --silent --show-error --noproxy "*" --header @- "$KEYSIDE_URL_OPENAI/v1/models"')
    result = await keyside_exec(exec_app.args("--service", "openai", "--", "sh", "-c", recipe), exec_app.env())
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["data"][0]["id"] == "fake-model"
    models = [r for r in exec_app.openai.requests if r.path == "/v1/models"]
    assert [r.header("Authorization") for r in models] == [f"Bearer {OPENAI_KEY}"]


async def test_exec_token_scope(exec_app: ExecApp) -> None:
    result = await keyside_exec(exec_app.args("--service", "openai", "--", *python("scope.py")), exec_app.env())
    assert result.returncode == 0, result.stderr

    attempts = {line["attempt"]: line for line in result.json_lines()}
    assert attempts["own_service"]["status"] == 200
    assert attempts["other_service"] == {"attempt": "other_service", "status": 403, "reason": "token_scope"}
    assert attempts["ui_route_status"] == {"attempt": "ui_route_status", "status": 403, "reason": "token_scope"}
    assert attempts["ui_route_feed"] == {"attempt": "ui_route_feed", "status": 403, "reason": "token_scope"}
    assert exec_app.anthropic.requests == []


# ---- what the child can see ----------------------------------------------------------------------

async def test_exec_child_sees_no_secret(exec_app: ExecApp, tmp_path: Path) -> None:
    report_file = tmp_path / "report.json"
    parent_extra = {"OPENAI_API_KEY": OPENAI_KEY, "DATABASE_URL": f"postgres://u:{ANTHROPIC_KEY}@127.0.0.1/db",
                    "KEYSIDE_URL_STALE": "http://127.0.0.1:1/api/svc/stale", "HARMLESS": "kept"}
    result = await keyside_exec(exec_app.args("--", *python("report.py", str(report_file))),
                                exec_app.env(**parent_extra))
    assert result.returncode == 0, result.stderr
    report = json.loads(report_file.read_text())
    environ = report["environ"]

    everything = json.dumps(report)
    for value in (OPENAI_KEY, ANTHROPIC_KEY, PASSPHRASE):
        assert value not in everything
    assert "OPENAI_API_KEY" not in environ
    assert "DATABASE_URL" not in environ
    assert "KEYSIDE_VAULT_PASSPHRASE" not in environ
    assert "KEYSIDE_URL_STALE" not in environ
    assert environ["HARMLESS"] == "kept"

    base = environ["KEYSIDE_URL"]
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base)
    assert re.fullmatch(r"[0-9a-f]{64}", environ["KEYSIDE_TOKEN"])
    assert environ["KEYSIDE_URL_OPENAI"] == f"{base}/api/svc/openai"
    assert environ["KEYSIDE_URL_ANTHROPIC"] == f"{base}/api/svc/anthropic"
    assert environ["KEYSIDE_URL_LOCAL_LLM"] == f"{base}/api/svc/local-llm"
    assert "KEYSIDE_URL_UNUSED" not in environ
    assert report["pgid"] == report["parent_pgid"]

    assert "OPENAI_API_KEY is not passed to the command" in result.stderr
    assert "DATABASE_URL is not passed to the command" in result.stderr
    assert environ["KEYSIDE_TOKEN"] not in result.stderr


# ---- runs rejected before start ------------------------------------------------------------------

REJECTED_RUNS = [
    # (arguments after the app options, exit code, texts stderr must contain)
    pytest.param(["--service", "nope", "--", "true"], 1, ["Unknown service 'nope'", "anthropic, local-llm"],
                 id="unknown-service"),
    pytest.param(["--service", "unused", "--", "true"], 1, ["unused needs UNUSED_API_KEY",
                                                           "keyside secrets set UNUSED_API_KEY"],
                 id="missing-secret"),
    pytest.param(["--service", "openai,,anthropic", "--", "true"], 2, ["empty name"], id="empty-service"),
    pytest.param(["--service", "openai"], 2, ["No command given"], id="no-command"),
    pytest.param(["--", "echo", OPENAI_KEY], 1, ["Argument 1 of the command contains a stored secret value"],
                 id="secret-in-argv"),
    pytest.param(["--", "/nonexistent/keyside-test-program"], 127, ["Command not found"], id="not-found"),
]


@pytest.mark.parametrize(("args", "exit_code", "texts"), REJECTED_RUNS)
async def test_exec_rejects_run(exec_app: ExecApp, args: list[str], exit_code: int, texts: list[str]) -> None:
    result = await keyside_exec(exec_app.args(*args), exec_app.env())
    assert result.returncode == exit_code
    for text in texts:
        assert text in result.stderr
    assert OPENAI_KEY not in result.stderr
    assert result.stdout == ""


async def test_exec_secret_set_by_cli_persists(exec_app: ExecApp, tmp_path: Path) -> None:
    # The first run stores the key with `keyside secrets set`, the second one uses it.
    key = "sk-exec-set-by-cli-7a1e5c3d9b"
    setter = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "keyside", "secrets", "set", "OPENAI_API_KEY", "--stdin", *exec_app.args(),
        env=exec_app.env(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True)
    out, err = await asyncio.wait_for(setter.communicate(key.encode() + b"\n"), RUN_TIMEOUT_S)
    assert setter.returncode == 0, err.decode()
    assert key not in (out + err).decode()

    exec_app.openai.key = key
    result = await keyside_exec(exec_app.args("--service", "openai", "--", *python("scope.py")), exec_app.env())
    attempts = {line["attempt"]: line for line in result.json_lines()}
    assert attempts["own_service"]["status"] == 200
    assert [r.header("Authorization") for r in exec_app.openai.requests] == [f"Bearer {key}"]


# ---- exit codes and signals ----------------------------------------------------------------------

EXIT_CASES = [
    pytest.param("raise SystemExit(0)", 0, id="zero"),
    pytest.param("raise SystemExit(42)", 42, id="forty-two"),
    pytest.param("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", 128 + 9, id="killed"),
]


@pytest.mark.parametrize(("code", "expected"), EXIT_CASES)
async def test_exec_exit_code(keyless_app: list[str], code: str, expected: int) -> None:
    result = await keyside_exec([*keyless_app, "--", sys.executable, "-c", code])
    assert result.returncode == expected, result.stderr


async def start_signals_child(app_args: list[str], mode: str) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "keyside", "exec", *app_args, "--", *python("signals.py", mode),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True)
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), RUN_TIMEOUT_S)
    assert line == b"ready\n"
    return process


SIGNAL_CASES = [
    pytest.param(signal.SIGTERM, "exit", 10 + signal.SIGTERM, id="term-handled"),
    pytest.param(signal.SIGINT, "exit", 10 + signal.SIGINT, id="int-handled"),
    pytest.param(signal.SIGHUP, "die", 128 + signal.SIGHUP, id="hup-kills"),
]


@pytest.mark.parametrize(("signum", "mode", "expected"), SIGNAL_CASES)
async def test_exec_relays_signal(keyless_app: list[str], signum: signal.Signals, mode: str,
                                  expected: int) -> None:
    process = await start_signals_child(keyless_app, mode)
    process.send_signal(signum)
    stdout, stderr = await asyncio.wait_for(process.communicate(), STEP_TIMEOUT_S)
    assert process.returncode == expected, stderr.decode()
    if mode == "exit":
        assert stdout.decode().count(f"got {signum.name}") == 1


def children_of(pid: int) -> dict[int, str]:
    """Return {pid: command line} of the live processes whose parent is `pid`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue
        if f"\nPPid:\t{pid}\n" in status:
            found[int(entry.name)] = cmdline
    return found


def is_running(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status and "\nState:\tX" not in status


async def test_exec_sigkill_leaves_no_sidecar(keyless_app: list[str]) -> None:
    process = await start_signals_child(keyless_app, "die")
    children = children_of(process.pid)
    sidecars = [pid for pid, cmdline in children.items() if SIDECAR_MODULE in cmdline]
    commands = [pid for pid, cmdline in children.items() if "signals.py" in cmdline]
    assert len(sidecars) == 1, children
    assert len(commands) == 1, children

    process.kill()
    deadline = time.monotonic() + STEP_TIMEOUT_S
    while (is_running(process.pid) or is_running(sidecars[0])) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    sidecar_survived = is_running(sidecars[0])

    # The command outlives a SIGKILLed keyside exec (its token no longer works) and keeps the
    # output pipes open, so the test ends it before waiting for keyside exec.
    os.kill(commands[0], signal.SIGKILL)
    await asyncio.wait_for(process.communicate(), STEP_TIMEOUT_S)
    assert not sidecar_survived


async def test_exec_ctrl_c_on_terminal(keyless_app: list[str]) -> None:
    need(shutil.which("setsid") is not None, "setsid (util-linux) is needed to give a process a terminal")
    from test_exec_terminal import CTRL_C, Terminal

    terminal = Terminal([sys.executable, "-m", "keyside", "exec", *keyless_app, "--",
                         *python("signals.py", "count")])
    try:
        await asyncio.to_thread(terminal.read_until, "ready")
        terminal.type(CTRL_C)
        await asyncio.to_thread(terminal.read_until, "got SIGINT")
        terminal.type(b"quit\n")
        output = await asyncio.to_thread(terminal.read_until, "read quit")
        assert await asyncio.to_thread(terminal.wait) == 0
        assert output.count("got SIGINT") == 1
    finally:
        terminal.close()


async def test_exec_survives_sidecar_restart(exec_app: ExecApp) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "keyside", "exec", *exec_app.args("--service", "openai", "--", *python("repeat.py")),
        env=exec_app.env(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True)
    assert process.stdin is not None
    assert process.stdout is not None

    async def call() -> dict:
        process.stdin.write(b"call\n")
        await process.stdin.drain()
        return json.loads(await asyncio.wait_for(process.stdout.readline(), RUN_TIMEOUT_S))

    assert (await call())["status"] == 200
    sidecars = [pid for pid, cmdline in children_of(process.pid).items() if SIDECAR_MODULE in cmdline]
    assert len(sidecars) == 1
    os.kill(sidecars[0], signal.SIGKILL)

    # The host restarts the sidecar after a short backoff, on the same port and with the
    # child's token added again, so the child's unchanged URL and token work again.
    deadline = time.monotonic() + STEP_TIMEOUT_S
    statuses = []
    while time.monotonic() < deadline:
        statuses.append((await call())["status"])
        if statuses[-1] == 200:
            break
        await asyncio.sleep(0.2)
    assert statuses[-1] == 200, statuses
    restarted = [pid for pid, cmdline in children_of(process.pid).items() if SIDECAR_MODULE in cmdline]
    assert restarted
    assert restarted != sidecars

    process.stdin.close()
    _, stderr = await asyncio.wait_for(process.communicate(), STEP_TIMEOUT_S)
    assert process.returncode == 0, stderr.decode()
    assert [r.header("Authorization") for r in exec_app.openai.requests] == [f"Bearer {OPENAI_KEY}"] * 2


async def test_exec_ctrl_c_stops_shell_script(keyless_app: list[str]) -> None:
    need(shutil.which("setsid") is not None, "setsid (util-linux) is needed to give a process a terminal")
    need(shutil.which("bash") is not None, "bash is needed for the job control tests")
    from test_exec_terminal import CTRL_C, Terminal

    # A script whose keyside exec command dies of Ctrl-C stops there, as it would without keyside.
    command = shlex.join([sys.executable, "-m", "keyside", "exec", *keyless_app, "--",
                          *python("signals.py", "die")])
    terminal = Terminal(["bash", "-c", f"{command}; echo after=$?"])
    try:
        await asyncio.to_thread(terminal.read_until, "ready")
        terminal.type(CTRL_C)
        assert await asyncio.to_thread(terminal.wait) == -signal.SIGINT
        assert "after=" not in terminal.output.decode("utf-8", "replace")
    finally:
        terminal.close()
