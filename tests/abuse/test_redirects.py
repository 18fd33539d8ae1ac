"""The built-in FranceConnect's default client is no open redirect on a public instance: authorize
and logout send a browser back only to loopback, the sandbox's own origin, or what the operator
listed; anything else gets the provider's error page. And a wrong `id_token_hint` (a userinfo
JWT...) gets that page too, not a 500."""
from __future__ import annotations

import secrets
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from ..conftest import SECRET

PREFIX = "/franceconnect/api/v2"
CITIZEN = "cnaf_parent_isole"
OWN = "https://sandbox.example.fr"  # the public instance's address, as the test client calls it
LISTED = "https://app.example.fr,https://other.example.fr/only/this"
LOOPBACK = "http://127.0.0.1:8765/callback"


@pytest.fixture(scope="module")
def public(tmp_path_factory):
    """One public instance for the module (building one per case would cost a second each)."""
    from sandbox import Settings, create_app
    app = create_app(Settings(token_secret=SECRET, data_dir=tmp_path_factory.mktemp("public-fc"), reload_interval=0,
                              public=True, franceconnect_redirects=LISTED))
    return app.test_client(), app


def authorize(client, redirect_uri, **extra):
    query = {"client_id": "sandbox", "response_type": "code", "redirect_uri": redirect_uri,
             "scope": "openid identite_pivot", "state": secrets.token_urlsafe(32),
             "nonce": secrets.token_urlsafe(32), "acr_values": "eidas1", "login_hint": CITIZEN, "prompt": "none",
             **extra}
    return client.get(PREFIX + "/authorize?" + urlencode(query), base_url=OWN)


def login(client, redirect_uri=LOOPBACK) -> dict:
    """The whole non-interactive login of a well-behaved client: its tokens."""
    back = authorize(client, redirect_uri)
    assert back.status_code == 302 and back.headers["Location"].startswith(redirect_uri), back.get_data(as_text=True)
    code = parse_qs(urlsplit(back.headers["Location"]).query)["code"][0]
    tokens = client.post(PREFIX + "/token", base_url=OWN, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
        "client_id": "sandbox", "client_secret": "sandbox"})
    assert tokens.status_code == 200, tokens.get_data(as_text=True)
    return tokens.get_json()


HOSTILE = [
    "https://evil.example/callback",
    "https://app.example.fr.evil.example/",           # a listed name as a prefix of another
    "https://app.example.fr@evil.example/",           # userinfo: the browser goes to evil.example
    "http://127.0.0.1\\@evil.example/",               # a backslash is a slash to a browser
    "https://other.example.fr/elsewhere",             # a listed address with a path: that path only
    "https://sandbox.example.fr.evil.example/",
    "http://sandbox.example.fr/callback",             # the own origin is https
    "//evil.example/",
    "javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "app://deep-link",                                 # native schemes: not on a public instance
]


@pytest.mark.parametrize("target", HOSTILE)
def test_authorize_never_redirects_elsewhere(public, target):
    client, _ = public
    bystander = login(client)  # a well-behaved client before the attempt
    refused = authorize(client, target)
    assert refused.status_code == 400 and "Location" not in refused.headers, refused.status_code
    assert "redirect_uri" in refused.get_data(as_text=True)
    assert login(client).keys() == bystander.keys()  # and after it


@pytest.mark.parametrize("target", [LOOPBACK, "http://localhost:3000/cb", "http://[::1]/cb",
                                    OWN + "/franceconnect/essayer/retour", "https://app.example.fr/any/path",
                                    "https://other.example.fr/only/this"])
def test_authorize_sends_back_to_loopback_the_sandbox_itself_and_the_listed_addresses(public, target):
    client, _ = public
    back = authorize(client, target)
    assert back.status_code == 302 and back.headers["Location"].startswith(target + "?code=")


@pytest.mark.parametrize("target", HOSTILE[:6])
def test_logout_never_redirects_elsewhere(public, target):
    client, _ = public
    tokens = login(client)
    refused = client.get(PREFIX + "/session/end", base_url=OWN, query_string={
        "id_token_hint": tokens["id_token"], "post_logout_redirect_uri": target, "state": "s"})
    assert refused.status_code == 400 and "Location" not in refused.headers
    done = client.get(PREFIX + "/session/end", base_url=OWN, query_string={
        "id_token_hint": tokens["id_token"], "post_logout_redirect_uri": LOOPBACK, "state": "s"})
    assert done.status_code == 302 and done.headers["Location"] == LOOPBACK + "?state=s"


def test_a_private_instance_keeps_sending_anywhere_unless_told(make_app):
    client = make_app().test_client()
    assert authorize(client, "https://rp.example.test/cb").status_code == 302
    limited = make_app(franceconnect_redirects="https://rp.example.test").test_client()
    assert authorize(limited, "https://rp.example.test/cb").status_code == 302
    assert authorize(limited, "https://evil.example/cb").status_code == 400


@pytest.mark.parametrize("public_flag", [False, True])
def test_a_wrong_id_token_hint_gets_the_providers_error_page(make_app, public_flag):
    client = make_app(public=public_flag).test_client()
    tokens = login(client)
    userinfo = client.get(PREFIX + "/userinfo", base_url=OWN,
                          headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert userinfo.status_code == 200
    for hint in (userinfo.get_data(as_text=True), tokens["access_token"], "a.b.c", "x" * 20_000, ""):
        page = client.get(PREFIX + "/session/end", base_url=OWN,
                          query_string={"id_token_hint": hint, "post_logout_redirect_uri": LOOPBACK})
        assert page.status_code == 400, (hint[:20], page.status_code)
        assert "id_token_hint" in page.get_data(as_text=True) and page.mimetype == "text/html"
    # the session is still alive: none of those logged anyone out
    assert client.get(PREFIX + "/userinfo", base_url=OWN,
                      headers={"Authorization": f"Bearer {tokens['access_token']}"}).status_code == 200
