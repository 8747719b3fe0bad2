"""Every component's log, after the whole e2e run: no secret, no token, no key.

The operator, the webhook and the API each log to a file the test harness registered
(`tests.logscan`); this test runs last (marker `last`) and reads them all, looking for every
secret value the tests used (passwords, Credential plaintexts, master keys, in the encodings
they travel in) and for anything shaped like a credential (signed JWTs, refresh tokens, API
keys, PEM private keys), so a token no test registered is caught too. The scanner itself is
proven to find planted secrets in `tests/unit/test_logscan.py`; here a positive control shows it
really reads each log (every log holds JSON records of its own component).
"""

from __future__ import annotations

import re

import pytest

from tests import logscan


def _own_record(component: str) -> re.Pattern[str]:
    """A JSON log record naming its component: proof that the scan read the real file."""
    return re.compile(r'^\{"time":"[^"]+","level":"[a-z]+","component":"' + component + '"',
                      re.MULTILINE)


@pytest.mark.last
def test_no_component_log_holds_a_secret() -> None:
    if not logscan.EXPECTED:
        pytest.skip("no component runs in this selection: run it with the e2e tests whose "
                    "logs it scans")
    logs = list(logscan.LOGS)
    missing = logscan.EXPECTED - logscan.components(logs)
    assert not missing, f"these components ran, but no log of theirs was registered: {missing}"
    for log in logs:
        assert log.path.exists(), f"{log.component} log {log.path} is gone"
        assert _own_record(log.component).search(log.path.read_text(errors="replace")), \
            f"{log.component} log {log.path} holds none of its records: the scan would " \
            "prove nothing"
    assert logscan.SECRETS, "no secret was registered: the scan would prove nothing"

    hits = logscan.scan(logs, logscan.SECRETS)

    scanned = sum(log.path.stat().st_size for log in logs)
    assert not hits, (f"secrets in component logs ({len(logs)} logs, {scanned} bytes "
                      "scanned):\n" + "\n".join(map(str, hits[:50])))
