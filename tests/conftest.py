"""Shared fixtures live in tests/fixtures/ as pytest plugins, one module per concern."""

pytest_plugins = [
    "tests.fixtures.cluster",
    "tests.fixtures.processes",
    "tests.fixtures.gateway",
    "tests.fixtures.omnideployment",
    "tests.fixtures.worker_app",
    "tests.fixtures.speech",
    "tests.fixtures.browser",
    "tests.fixtures.packaging",
]
