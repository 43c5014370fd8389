"""How the engine opens a store: ``*_env`` options, credentials in URLs, what pickling carries,
which failures become one StoreUnavailable, the cache folder. (On S3 itself:
tests/test_store_s3.py.)"""

from __future__ import annotations

import pickle
import socket
from pathlib import Path

import pytest
from qmtl_engine import InputError, Store, StoreUnavailable, default_cache_dir, registered_secrets
from qmtl_engine.store_access import classify, resolve_options

from qmtl_lock.redact import redact_output

SECRET = "Zq8-store-s3cr3t"


def test_env_options_are_resolved_at_any_depth_and_their_secrets_registered() -> None:
    env = {"TEAM_PW": SECRET, "TEAM_REGION": "eu-west-3"}
    options = {"secret_env": "TEAM_PW", "anon": False,
               "client_kwargs": {"region_name_env": "TEAM_REGION"}}
    assert resolve_options(options, env) == {
        "secret": SECRET, "anon": False, "client_kwargs": {"region_name": "eu-west-3"}}
    assert SECRET in registered_secrets()
    assert "eu-west-3" not in registered_secrets()  # not a secret-looking option
    assert redact_output(f"the server said {SECRET}", {}) == "the server said <redacted>"


@pytest.mark.parametrize(("options", "words"), [
    ({"secret_env": "NOT_SET_ANYWHERE"}, "environment variable NOT_SET_ANYWHERE is not set; "
                                         "store option secret_env reads secret from it"),
    ({"client_kwargs": {"token_env": "NOT_SET_ANYWHERE"}},
     "store option client_kwargs.token_env reads client_kwargs.token"),
    ({"secret": "x", "secret_env": "A"}, "store option secret is given twice"),
    ({"key_env": "has space"}, "must name an environment variable"),
    ({"_env": "A"}, "`_env` names no option"),
], ids=["missing", "missing-nested", "twice", "bad-name", "no-option"])
def test_options_that_cannot_be_resolved_are_bad_input(options: dict[str, object],
                                                       words: str) -> None:
    with pytest.raises(InputError) as caught:
        resolve_options(options, {"A": "1"})
    assert words in caught.value.what
    assert "seamless.yaml" in (caught.value.where or "")


@pytest.mark.parametrize("url", [
    f"s3://AKIAKEY:{SECRET}@bucket/prefix",
    f"ftp://user:{SECRET}@ftp.example.invalid/prefix",
    f"https://user:{SECRET}@example.invalid/store",
])
def test_a_password_in_any_url_is_refused_without_showing_it(url: str) -> None:
    with pytest.raises(InputError) as caught:
        Store(url)
    text = caught.value.render()
    assert "carries a password" in text and "secret_env" in text
    assert SECRET not in text and "<redacted>@" in text


def test_a_store_pickles_as_its_url_and_unresolved_options(monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    monkeypatch.setenv("PICKLE_TEST_TOKEN", SECRET)
    store = Store("memory://pickled/store", storage_options={"token_env": "PICKLE_TEST_TOKEN"},
                  cache=False)
    data = pickle.dumps(store)
    assert SECRET.encode() not in data and b"PICKLE_TEST_TOKEN" in data
    monkeypatch.setenv("PICKLE_TEST_TOKEN", "another-value-elsewhere")  # a worker's own
    again = pickle.loads(data)
    assert (again.url, again.storage_options) == (store.url, store.storage_options)
    monkeypatch.delenv("PICKLE_TEST_TOKEN")
    with pytest.raises(InputError, match="PICKLE_TEST_TOKEN is not set"):
        pickle.loads(data)


def test_local_stores_have_no_cache_and_no_guard(tmp_path: Path) -> None:
    for url in (str(tmp_path / "s"), f"file://{tmp_path}/s", "memory://local/s"):
        store = Store(url)
        assert store.cache is None and not store.remote
        assert type(store.fs).__name__ in ("LocalFileSystem", "MemoryFileSystem")


def test_the_default_cache_folder() -> None:
    home = Path.home()
    assert default_cache_dir({}) == home / ".cache" / "qmtl-lock"
    assert default_cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/qmtl-lock")
    assert default_cache_dir({"XDG_CACHE_HOME": "/x", "QMTL_LOCK_CACHE": "/c"}) == Path("/c")


def _refused() -> OSError:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError as exc:
        return exc
    raise AssertionError("something listens on a port just released")


def test_what_becomes_a_storage_failure_and_what_passes_through() -> None:
    assert classify(_refused()) == "unreachable"
    assert classify(TimeoutError("slow")) == "timeout"
    assert classify(PermissionError("AccessDenied")) == "denied"
    assert classify(OSError(5, "Internal error")) == "failed"
    for handled in (FileNotFoundError("gone"), FileExistsError("taken"), KeyError("a bug"),
                    ValueError("a bug")):
        assert classify(handled) is None


def test_a_translated_failure_is_a_store_error_and_an_os_error() -> None:
    assert issubclass(StoreUnavailable, OSError)
    error = StoreUnavailable("cannot reach", kind="unreachable", url=f"s3://b/x?token={SECRET}")
    assert error.exit_code == 3 and SECRET not in error.render()
