"""`chitram-admin storage init`: Garage made ready for the app through its admin API v2, against
the stand-in of that API the deployment tests run (tests/deploy/standins/garage_admin.py), which
checks each request as Garage's OpenAPI document describes it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from click.testing import CliRunner, Result

from chitram.cli import admin
from tests.deploy.standins.garage_admin import GarageState, make_server
from tests.support.server import free_port

TOKEN = "admin-token"
ACCESS_KEY = "GK" + "1f" * 12
SECRET_KEY = "c0" * 32


@dataclass
class Garage:
    url: str
    state: GarageState


@pytest.fixture
def garage() -> Iterator[Garage]:
    state = GarageState()
    server = make_server(free_port(), TOKEN, state)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Garage(f"http://127.0.0.1:{server.server_address[1]}", state)
    finally:
        server.shutdown()
        server.server_close()


def init(garage: Garage, **overrides: str) -> Result:
    env = {
        "GARAGE_ADMIN_URL": garage.url, "GARAGE_ADMIN_TOKEN": TOKEN, "CHITRAM_S3_BUCKET": "chitram",
        "CHITRAM_S3_ACCESS_KEY": ACCESS_KEY, "CHITRAM_S3_SECRET_KEY": SECRET_KEY, **overrides,
    }  # fmt: skip
    return CliRunner().invoke(admin.cli, ["storage", "init", "--wait", "2"], env=env)


def test_a_new_node_gets_a_layout_a_private_bucket_and_a_key_for_that_bucket_only(garage: Garage) -> None:
    result = init(garage)
    assert result.exit_code == 0, result.output
    state = garage.state
    assert state.layout_version == 1 and [role["id"] for role in state.roles] == [state.node_id]
    [(bucket_id, bucket)] = state.buckets.items()
    assert bucket["alias"] == "chitram" and bucket["website"] is False
    assert state.keys[ACCESS_KEY]["secret"] == SECRET_KEY
    assert state.keys[ACCESS_KEY]["createBucket"] is False
    assert state.grants == {(bucket_id, ACCESS_KEY): {"read": True, "write": True, "owner": False}}
    assert "bucket chitram is private; key " + ACCESS_KEY in result.stdout


def test_running_it_again_changes_nothing(garage: Garage) -> None:
    assert init(garage).exit_code == 0
    calls = len(garage.state.calls)
    again = init(garage)
    assert again.exit_code == 0, again.output
    changed = [name for name in garage.state.calls[calls:] if not name.startswith(("Get", "List"))]
    assert changed == []
    assert again.stdout.endswith("(nothing to change)\n")


def test_a_cluster_still_settling_after_its_first_layout_is_waited_for(garage: Garage) -> None:
    garage.state.unavailable["CreateBucket"] = 2
    result = init(garage)
    assert result.exit_code == 0, result.output
    assert garage.state.calls.count("CreateBucket") == 3
    assert [bucket["alias"] for bucket in garage.state.buckets.values()] == ["chitram"]


def test_wider_access_given_by_hand_is_taken_back(garage: Garage) -> None:
    assert init(garage).exit_code == 0
    state = garage.state
    [bucket_id] = state.buckets
    other = state.handle("POST", "CreateBucket", {}, {"globalAlias": "someone-else"})["id"]
    state.handle("POST", "AllowBucketKey", {}, {"bucketId": other, "accessKeyId": ACCESS_KEY,
                                               "permissions": {"read": True, "write": True}})  # fmt: skip
    state.grants[(bucket_id, ACCESS_KEY)]["owner"] = True
    state.keys[ACCESS_KEY]["createBucket"] = True
    state.buckets[bucket_id]["website"] = True
    result = init(garage)
    assert result.exit_code == 0, result.output
    assert state.grants[(other, ACCESS_KEY)] == {"read": False, "write": False, "owner": False}
    assert state.grants[(bucket_id, ACCESS_KEY)] == {"read": True, "write": True, "owner": False}
    assert state.keys[ACCESS_KEY]["createBucket"] is False
    assert state.buckets[bucket_id]["website"] is False


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"GARAGE_ADMIN_TOKEN": "wrong"}, "Garage refused the admin token"),
        ({"CHITRAM_S3_ACCESS_KEY": "chitramapp"}, "CHITRAM_S3_ACCESS_KEY must be GK followed by 24"),
        ({"CHITRAM_S3_SECRET_KEY": "short"}, "CHITRAM_S3_SECRET_KEY must be 64 lowercase hex digits"),
    ],
)
def test_what_garage_would_refuse_stops_it_with_what_to_change(
    garage: Garage, overrides: dict[str, str], message: str
) -> None:
    result = init(garage, **overrides)
    assert result.exit_code == 1
    assert message in result.stderr
    assert garage.state.buckets == {} and garage.state.keys == {}


def test_a_changed_secret_for_an_existing_key_is_refused(garage: Garage) -> None:
    assert init(garage).exit_code == 0
    result = init(garage, CHITRAM_S3_SECRET_KEY="d1" * 32)
    assert result.exit_code == 1
    assert f"Garage already has key {ACCESS_KEY} with another secret" in result.stderr
    assert garage.state.keys[ACCESS_KEY]["secret"] == SECRET_KEY


def test_an_unreachable_garage_is_named_after_the_wait() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = init(Garage(url, GarageState()))
    assert result.exit_code == 1
    assert f"Garage's admin API at {url} is unreachable" in result.stderr
