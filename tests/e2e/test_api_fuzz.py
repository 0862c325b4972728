"""Schemathesis against a real server's /openapi.json.

Whatever a client sends within or around the schema, the answer is never a 5xx: bad input is the caller's
error, in the caller's protocol.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import ADMIN_TOKEN, Admin, RunningServer, start_server, stop_server
from tests.e2e.catalogs import write_catalog

EXAMPLES_PER_ROUTE = 40


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningServer, str]]:
    """A server with an admin token and one fast model, and a key for the non-admin routes."""
    tmp: Path = tmp_path_factory.mktemp("api-fuzz")
    catalog = write_catalog(tmp / "catalog.yaml", {"pocketsphinx": {"engine": "pocketsphinx"}})
    server = start_server(tmp, {"EARSHOT_ADMIN_TOKEN": ADMIN_TOKEN, "EARSHOT_CONFIG": str(catalog)})
    try:
        _, key = Admin(server).create_key()
        yield server, key
    finally:
        stop_server(server)


def test_no_request_gets_a_server_error(fuzzed: tuple[RunningServer, str]) -> None:
    server, key = fuzzed
    schema = schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10, "every public route is in the schema"
    failures: list[str] = []
    for operation in operations:

        @settings(max_examples=EXAMPLES_PER_ROUTE, deadline=None, suppress_health_check=list(HealthCheck))
        @given(case=st.one_of(*(operation.as_strategy(mode) for mode in schemathesis.GenerationMode)))
        def never_a_server_error(case: schemathesis.Case) -> None:
            credential = ADMIN_TOKEN if case.path.startswith("/admin") else key
            headers = {**(case.headers or {}), "Authorization": f"Bearer {credential}"}
            response = case.call(base_url=server.base_url, headers=headers, timeout=30)
            if response.status_code >= 500 or "Traceback" in response.text:
                failures.append(
                    f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
                )

        never_a_server_error()
    assert not failures, "\n".join(failures[:20])
