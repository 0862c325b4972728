"""The package's layering, read from the source with `ast`: no module is imported to check it.

Every import counts, wherever it is written: at module level, inside a function, or under `TYPE_CHECKING`,
since a deferred or type-only import is exactly how a cycle or an upward dependency hides.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[2] / "earshot"

# What each layer may not import, by package prefix. Engines sit on audio alone; everything that decides who
# calls them, with which protocol, and how a live session runs, is above them.
ABOVE_ENGINES = (
    "earshot.routing",
    "earshot.streaming",
    "earshot.api",
    "earshot.accounts",
    "earshot.store",
    "earshot.cli",
    "earshot.app",
)
ABOVE_AUDIO = ("earshot.engines", "earshot.voice", *ABOVE_ENGINES)
# The speech synthesis engines sit beside the recognition engines: on audio and engines (for the provider
# plumbing and its errors), below routing, which builds them from the catalog.
SYNTHESIS_ENGINES = (
    "earshot.voice.tts",
    "earshot.voice.spec",
    "earshot.voice.voices",
    "earshot.voice.pieces",
    "earshot.voice.espeak",
    "earshot.voice.openai_tts",
)

# A sans-I/O protocol module turns messages into events and back; the socket shell beside it does the I/O. It
# may use asyncio for tasks and queues, but never to open a connection.
NETWORK_MODULES = (
    "fastapi",
    "starlette",
    "websockets",
    "uvicorn",
    "httpx",
    "aiohttp",
    "socket",
    "ssl",
    "asyncio.streams",
)
ASYNCIO_NETWORK_CALLS = frozenset(
    {
        "open_connection",
        "start_server",
        "open_unix_connection",
        "start_unix_server",
        "create_connection",
        "create_server",
        "create_unix_connection",
        "create_unix_server",
        "create_datagram_endpoint",
        "connect_accepted_socket",
        "sock_connect",
        "sock_accept",
        "sock_recv",
        "sock_sendall",
        "StreamReader",
        "StreamWriter",
    }
)
# The sans-I/O modules today, by module or package. A module named `protocol` anywhere in the package is one
# by convention (the per-protocol packages under `api/` keep their protocol class there), listed or not.
SANS_IO_MODULES = (
    "earshot.api.deepgram.params",
    "earshot.api.deepgram.results",
    "earshot.api.failures",
    "earshot.api.json_messages",
    "earshot.api.live.actions",
    "earshot.api.managed.wire",
    "earshot.api.realtime.client_events",
    "earshot.api.realtime.endings",
    "earshot.api.realtime.relay",
    "earshot.api.realtime.server_events",
    "earshot.api.realtime.session",
    "earshot.api.transcripts.documents",
    "earshot.audio.raw",
    "earshot.client.deepgram_wire",
    "earshot.client.events",
    "earshot.client.managed_wire",
    "earshot.client.wire",
    "earshot.engines.deepgram_wire",
    "earshot.engines.results",
    "earshot.engines.spec",
    "earshot.engines.vosk_results",
    "earshot.engines.whisperlivekit_wire",
    "earshot.streaming",
    "earshot.voice.pieces",
    "earshot.voice.spec",
    "earshot.voice.tts",
    "earshot.voice.voices",
    "earshot.voice.chat_wire",
    "earshot.voice.conversation",
    "earshot.voice.spoken",
    "earshot.voice.voice_events",
    "earshot.api.realtime.conversation",
    "earshot.api.realtime.conversation_events",
)
PROTOCOL_MODULE_NAME = "protocol"
# The live protocols' packages: each keeps its sans-I/O class in `protocol.py`, its endpoint beside it.
LIVE_PROTOCOL_PACKAGES = ("earshot.api.realtime", "earshot.api.deepgram", "earshot.api.managed")


@dataclass(frozen=True, slots=True)
class Import:
    """One imported module, as written in `importer` at `line`."""

    importer: str
    imported: str
    line: int


def module_name(path: Path) -> str:
    """The dotted name of a source file under the package root."""
    parts = path.relative_to(PACKAGE_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def package_modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {module_name(path): path for path in sorted(PACKAGE_ROOT.rglob("*.py"))}


def _resolved(importer: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def imports_of(module: str, path: Path) -> Iterator[Import]:
    """Each module `module` imports; `from pkg import sub` names `pkg.sub` when that is a module of ours."""
    known = package_modules()
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            source = _resolved(module, path.name == "__init__.py", node)
            for alias in node.names:
                submodule = f"{source}.{alias.name}"
                yield Import(module, submodule if submodule in known else source, node.lineno)


@cache
def import_graph() -> dict[str, tuple[Import, ...]]:
    """Each module of the package and the imports it writes (of any module, ours or not)."""
    return {module: tuple(imports_of(module, path)) for module, path in package_modules().items()}


def is_under(module: str, prefixes: Iterable[str]) -> bool:
    """Whether `module` is one of `prefixes` or inside one of them."""
    return any(module == prefix or module.startswith(f"{prefix}.") for prefix in prefixes)


def forbidden_imports(importers: Iterable[str], forbidden: Iterable[str]) -> list[str]:
    """Imports, in `importers` modules or packages, of anything under `forbidden`; one line each."""
    importers, forbidden = tuple(importers), tuple(forbidden)
    return [
        f"{found.importer}:{found.line} imports {found.imported}"
        for module, found_imports in import_graph().items()
        if is_under(module, importers)
        for found in found_imports
        if is_under(found.imported, forbidden)
    ]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of `graph` as the modules around it (the first repeated last), or None when there is none."""
    done: set[str] = set()
    for start in sorted(graph):
        if start in done:
            continue
        path = [start]
        pending = [iter(sorted(graph[start]))]
        while pending:
            following = next(pending[-1], None)
            if following is None:
                done.add(path.pop())
                pending.pop()
            elif following in path:
                return [*path[path.index(following) :], following]
            elif following not in done and following in graph:
                path.append(following)
                pending.append(iter(sorted(graph[following])))
    return None


def internal_graph() -> dict[str, set[str]]:
    """The import graph restricted to the package's own modules."""
    graph = import_graph()
    return {
        module: {found.imported for found in found_imports if found.imported in graph}
        for module, found_imports in graph.items()
    }


def protocol_modules(declared: Iterable[str] = SANS_IO_MODULES) -> list[str]:
    """The modules under `declared` (modules or packages), and every module named `protocol`."""
    declared = tuple(declared)
    modules = package_modules()
    unknown = [name for name in declared if not any(is_under(module, (name,)) for module in modules)]
    assert not unknown, f"no such modules or packages: {unknown}"
    return [
        module
        for module in modules
        if is_under(module, declared) or module.rsplit(".", 1)[-1] == PROTOCOL_MODULE_NAME
    ]


def network_uses(module: str) -> Iterator[str]:
    """Where `module` imports a network or web-framework library, or opens a connection through asyncio."""
    for found in import_graph()[module]:
        if is_under(found.imported, NETWORK_MODULES):
            yield f"{module}:{found.line} imports {found.imported}"
    tree = ast.parse(package_modules()[module].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ASYNCIO_NETWORK_CALLS:
            yield f"{module}:{node.lineno} uses {node.attr}"
        elif isinstance(node, ast.ImportFrom) and node.module == "asyncio":
            for alias in node.names:
                if alias.name in ASYNCIO_NETWORK_CALLS:
                    yield f"{module}:{node.lineno} imports asyncio.{alias.name}"


def sans_io_violations(modules: Iterable[str]) -> list[str]:
    """Network I/O in any of `modules` (names of our modules); one line each."""
    return [line for module in modules for line in network_uses(module)]


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(internal_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or ())


def test_engines_import_nothing_above_them() -> None:
    assert forbidden_imports(["earshot.engines"], ABOVE_ENGINES) == []


def test_synthesis_engines_import_nothing_above_engines() -> None:
    assert forbidden_imports(SYNTHESIS_ENGINES, ABOVE_ENGINES) == []


def test_audio_imports_nothing_above_it() -> None:
    assert forbidden_imports(["earshot.audio"], ABOVE_AUDIO) == []


def test_routing_and_streaming_sit_beside_each_other_below_the_protocols() -> None:
    assert forbidden_imports(["earshot.routing"], ["earshot.streaming", "earshot.api"]) == []
    assert forbidden_imports(["earshot.streaming"], ["earshot.routing", "earshot.api"]) == []


def test_the_conversation_brain_knows_no_channel() -> None:
    assert forbidden_imports(["earshot.voice"], ["earshot.api", "earshot.cli", "earshot.app"]) == []


def test_protocol_modules_do_no_network_io() -> None:
    assert sans_io_violations(protocol_modules()) == []


def test_each_live_protocol_keeps_its_protocol_class_apart_from_its_endpoint() -> None:
    modules = package_modules()
    for package in LIVE_PROTOCOL_PACKAGES:
        assert f"{package}.protocol" in modules, f"{package} has no protocol module"
    assert sans_io_violations(f"{package}.protocol" for package in LIVE_PROTOCOL_PACKAGES) == []


def test_the_rules_catch_what_they_are_for() -> None:
    # A cycle through three modules is named in order, and an acyclic graph passes.
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    # The socket shells are what the sans-I/O rule would refuse in a protocol module.
    assert any("websockets" in line for line in sans_io_violations(["earshot.engines.realtime_upstream"]))
    assert any("httpx" in line for line in sans_io_violations(["earshot.engines.openai_wire"]))
    # An import inside a function is an edge too.
    assert "earshot.app" in {found.imported for found in import_graph()["earshot.cli.server"]}
