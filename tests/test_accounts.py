"""Several accounts on one studio (the real app in a child process, tiny variant): every way of
giving accounts works, each account sees and changes only its own runs (an admin sees all), and
wrong passwords are throttled per account and per client address with a readable message."""
from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from gradio_client import Client, handle_file

from conftest_ui import StudioProcess, portrait, spoken_clip

AUTH_FILE = """# the team
dave:pa:ss:word
root:rootpw:admin
eve:evepw
"""


@pytest.fixture(scope="module")
def studio(tmp_path_factory, tiny_weights):
    root = tmp_path_factory.mktemp("studio-accounts")
    (root / "team.txt").write_text(AUTH_FILE)
    app = StudioProcess(tiny_weights, root / "outputs", root / "app.log",
                        extra_args=("--auth", "bob:pw1,carol:pw2", "--auth", "frank:pw6",
                                    "--auth-file", str(root / "team.txt")))
    try:
        app.start()
        bob = Client(app.url, auth=("bob", "pw1"), verbose=False, download_files=str(root / "dl"))
        photo, voice = portrait(root / "portrait.png"), spoken_clip(root / "voice.wav", "Hi.")
        status = bob.predict("tiny", "TIA", "Bob's own take.", "", [handle_file(str(photo))], handle_file(str(voice)),
                             0, 0, "Original clip", False, 1.0, "128x96", 128, 96, False, 9, 2, 5.0, 7.0, 4.0, 7.5, 1,
                             api_name="/generate")[0]
        assert "Done:" in status, status
        yield {"app": app, "root": root, "bob": bob, "bob_run": status.split("Done:")[1].split("<")[0].strip()}
    finally:
        app.stop()


def login(studio, user: str, password: str, address: str | None = None) -> httpx.Response:
    headers = {"X-Forwarded-For": address} if address else {}
    return httpx.post(studio["app"].url + "login", data={"username": user, "password": password}, headers=headers,
                      timeout=30)


def test_every_way_of_giving_accounts_signs_in(studio):
    for user, password in (("bob", "pw1"), ("carol", "pw2"), ("frank", "pw6"), ("dave", "pa:ss:word"),
                           ("root", "rootpw"), ("eve", "evepw")):
        assert login(studio, user, password).status_code == 200, user
    # The comma list is several accounts, not one password.
    wrong = login(studio, "bob", "pw1,carol:pw2", address="10.0.1.1")
    assert wrong.status_code == 400 and wrong.json()["detail"] == "Incorrect credentials."


def test_each_account_sees_only_its_own_runs(studio):
    run, url, bob = studio["bob_run"], studio["app"].url, studio["bob"]
    carol = Client(url, auth=("carol", "pw2"), verbose=False)
    admin = Client(url, auth=("root", "rootpw"), verbose=False)
    mine = bob.predict("", "", "", False, 24, 0, api_name="/gallery_search")
    assert [e["id"] for e in mine["entries"]] == [run]
    assert admin.predict("", "", "", False, 24, 0, api_name="/gallery_search")["total"] == 1

    assert carol.predict("", "", "", False, 24, 0, api_name="/gallery_search") == \
        {"total": 0, "offset": 0, "more": False, "entries": []}
    grid, count = carol.predict("", "", "", False, api_name="/gallery_list")
    assert grid == [] and "No runs yet" in count
    video, _download, info, settings = carol.predict(run, api_name="/gallery_get")
    assert video is None and settings is None and "No gallery entry" in info
    with pytest.raises(Exception, match="No gallery entry"):
        carol.predict(run, True, api_name="/gallery_star")
    reused = carol.predict(run, api_name="/reuse_settings")
    assert "Bob's own take." not in str(reused)
    assert "No gallery entry" in carol.predict(run, api_name="/gallery_delete")[5]

    assert bob.predict("", "", "", False, 24, 0, api_name="/gallery_search")["total"] == 1, "carol deleted bob's run"
    assert (studio["root"] / "outputs" / run).is_dir()
    video, _download, _info, settings = bob.predict(run, api_name="/gallery_get")
    assert settings["prompt"] == "Bob's own take." and Path(video).read_bytes()[4:8] == b"ftyp"
    assert bob.predict(run, api_name="/reuse_settings")[2] == "Bob's own take."
    star = admin.predict(run, True, api_name="/gallery_star")
    assert star == {"id": run, "starred": True}
    assert bob.predict(run, False, api_name="/gallery_star")["starred"] is False


def test_the_outputs_folder_is_not_served_by_its_own_paths(studio):
    """Pages get copies of the files they may see; the kept files cannot be fetched by guessing their place."""
    run, url = studio["bob_run"], studio["app"].url
    kept = studio["root"] / "outputs" / run / f"{run}.mp4"
    assert kept.is_file()
    carol = httpx.Client(base_url=url, timeout=30)
    assert carol.post("login", data={"username": "carol", "password": "pw2"}).status_code == 200
    for path in (f"gradio_api/file={kept}", f"file={kept}", f"gradio_api/file={kept.parent}/../{run}/{kept.name}"):
        answer = carol.get(path)
        assert answer.status_code == 404 and not answer.content.startswith(b"\0\0"), (path, answer.status_code)


def test_wrong_passwords_are_throttled_per_account(studio):
    address = "10.0.2.2"
    for _ in range(5):
        assert login(studio, "eve", "guess", address).status_code == 400
    refused = login(studio, "eve", "evepw", address)
    assert refused.status_code == 429, refused.text
    detail = refused.json()["detail"]
    assert "Too many failed sign-ins for this account" in detail and "wait" in detail, detail
    assert login(studio, "eve", "evepw", "10.0.2.3").status_code == 429, "the account is locked from anywhere"
    assert login(studio, "frank", "pw6", address).status_code == 200, "other accounts sign in from that address"
    # The sign-in page shows only "incorrect credentials" itself, so its message states the rule.
    page = httpx.get(studio["app"].url + "gradio_api/login_check", timeout=30)
    assert page.status_code == 401 and "After 5 wrong passwords" in page.json()["detail"]["auth_message"], page.text


def test_wrong_passwords_are_throttled_per_address(studio):
    address = "10.0.3.3"
    for i in range(20):
        assert login(studio, f"made-up-{i}", "guess", address).status_code == 400
    refused = login(studio, "carol", "pw2", address)
    assert refused.status_code == 429 and "from this address" in refused.json()["detail"], refused.text
    assert login(studio, "carol", "pw2").status_code == 200, "other addresses still sign in"


def test_accounts_from_flags_environment_and_files(tmp_path, monkeypatch):
    from studio.accounts import Account
    from studio.config import parse_config

    team = tmp_path / "team.txt"
    team.write_text(AUTH_FILE)
    monkeypatch.setenv("HUMO_AUTH", "ann:a1,ben:b2")
    monkeypatch.setenv("HUMO_AUTH_FILE", str(team))
    users = parse_config([]).auth
    assert [a.user for a in users] == ["ann", "ben", "dave", "root", "eve"]
    assert Account("dave", "pa:ss:word") in users and Account("root", "rootpw", admin=True) in users
    assert [a.user for a in parse_config(["--auth", "zed:z", "--auth-file", ""]).auth] == ["zed"]  # flags win
    monkeypatch.delenv("HUMO_AUTH")
    monkeypatch.delenv("HUMO_AUTH_FILE")
    assert parse_config([]).auth == []
    for bad in (["--auth", "ann:a1,ann:other"], ["--auth", "nopassword"], ["--auth-file", str(tmp_path / "none")]):
        with pytest.raises(SystemExit):
            parse_config(bad)
    broken = tmp_path / "broken.txt"
    broken.write_text("ok:pw\njustaname\n")
    from studio.accounts import read_auth_file
    with pytest.raises(ValueError, match="line 2"):
        read_auth_file(str(broken))
