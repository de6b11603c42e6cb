"""The chat role's REST API (docs/chat.md "REST API"): FaltuBaat-compatible
account routes, tokens and their revocation, rooms, streams, body and rate
limits. Every test runs on SQLite and on PostgreSQL (chat_fixtures.backend).
"""

import base64
import json
import re
import sqlite3
import subprocess
import time

import jwt
import pytest

pytest.register_assert_rewrite("chat_fixtures")

from chat_fixtures import (
    PASSWORD,
    SECRET,
    bcryptjs_hash,
    claims,
    login,
    register,
    user_id,
)


USER_KEYS_REGISTER = {"username", "gender", "about", "firstName", "lastName"}
USER_KEYS = {"username", "firstName", "lastName", "gender", "about"}
PROFILE_KEYS = USER_KEYS | {"createdAt", "lastLogin"}
ROOM_KEYS = {"id", "title", "kind", "members", "joined"}
INVALID_TOKEN = {"error": "Invalid or expired token"}
AUTH_REQUIRED = {"error": "Authentication required"}


def assert_error(r, status, text=None):
    """status and a {"error": text} body (any non-empty text when None)."""
    assert r.status == status, r
    assert isinstance(r.json, dict), r
    assert set(r.json) == {"error"}, r
    if text is None:
        assert isinstance(r.json["error"], str) and r.json["error"], r
    else:
        assert r.json["error"] == text, r


def assert_invalid_token(r):
    assert_error(r, 401, INVALID_TOKEN["error"])
    www = r.headers.get("www-authenticate", "")
    assert www.startswith("Bearer"), r
    assert 'error="invalid_token"' in www, r


def verify(chat, token):
    return chat.api("GET", "/api/verify-token", token=token)


def b64url(obj):
    raw = obj if isinstance(obj, bytes) else json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def fresh_claims(token, **over):
    """The claims of an issued token with a fresh iat/exp."""
    c = claims(token)
    now = int(time.time())
    c.update(iat=now, exp=now + 3600)
    c.update(over)
    return c


def users_rows(chat, username):
    return chat.db.query("SELECT username, password FROM users WHERE username = ?", (username,))


# ======================================================== registration


def test_register_shape_and_storage(chat):
    r = chat.api("POST", "/api/register", {
        "username": "Alice_1", "password": PASSWORD, "gender": "female",
        "about": "hello", "firstName": "Alice", "lastName": "Liddell"})
    assert r.status == 201, r
    assert set(r.json) == {"success", "token", "user"}, r.json
    assert r.json["success"] is True
    assert isinstance(r.json["token"], str) and r.json["token"].count(".") == 2
    user = r.json["user"]
    assert set(user) == USER_KEYS_REGISTER, user
    assert user["username"].lower() == "alice_1", user
    assert {k: user[k] for k in ("gender", "about", "firstName", "lastName")} == {
        "gender": "female", "about": "hello", "firstName": "Alice", "lastName": "Liddell"}
    # stored lowercase, bcrypt $2b$ cost 10
    rows = users_rows(chat, "alice_1")
    assert len(rows) == 1, rows
    assert re.fullmatch(r"\$2b\$10\$[./A-Za-z0-9]{53}", rows[0][1]), rows
    assert users_rows(chat, "Alice_1") == []
    # the token works and names the stored user
    v = verify(chat, r.json["token"])
    assert v.status == 200, v
    assert v.json["user"]["username"] == "alice_1", v.json


@pytest.mark.parametrize("missing", ["username", "password", "gender"])
def test_register_required_fields(chat, missing):
    body = {"username": "someone", "password": PASSWORD, "gender": "male"}
    absent = dict(body)
    del absent[missing]
    empty = dict(body, **{missing: ""})
    for b in (absent, empty):
        r = chat.api("POST", "/api/register", b)
        assert r.status == 400 and r.json == {"error": "Username, password, and gender are required"}, (b, r)
    assert chat.db.query("SELECT COUNT(*) FROM users")[0][0] in (0, "0")


def test_register_username_pattern(chat):
    bad = ["ab", "a" * 21, "bad-name", "bad name", "bad.name", "ünï", "name!", "<abc>", "abc\n"]
    for name in bad:
        r = chat.api("POST", "/api/register", {"username": name, "password": PASSWORD, "gender": "male"})
        assert r.status == 400 and r.json == {"error": "Invalid username format"}, (name, r)
    for name in ["abc", "a" * 20, "A_b_9", "___", "123"]:
        register(chat, name)
    assert chat.db.query("SELECT COUNT(*) FROM users")[0][0] in (5, "5")


def test_register_password_length(chat):
    for i, pw in enumerate(["12345", "x" * 101]):
        r = chat.api("POST", "/api/register", {"username": "pw_bad%d" % i, "password": pw, "gender": "male"})
        assert r.status == 400 and r.json == {"error": "Password must be 6-100 characters"}, (pw, r)
    register(chat, "pw_six", password="123456")
    register(chat, "pw_hundred", password="y" * 100)
    login(chat, "pw_six", "123456")
    login(chat, "pw_hundred", "y" * 100)


def test_register_password_length_counts_characters(chat):
    # 6 two-byte characters are 6 characters; 5 (10 bytes) are too few,
    # 100 (200 bytes) are allowed, 51 four-byte emoji are 51 characters
    register(chat, "pw_utf8", password="é" * 6)
    login(chat, "pw_utf8", "é" * 6)
    register(chat, "pw_utf8_100", password="é" * 100)
    login(chat, "pw_utf8_100", "é" * 100)
    r = chat.api("POST", "/api/register", {"username": "pw_utf8_bad", "password": "é" * 5, "gender": "male"})
    assert r.status == 400 and r.json == {"error": "Password must be 6-100 characters"}, r


def test_register_gender(chat):
    for g in ["robot", "Male", "FEMALE", "none"]:
        r = chat.api("POST", "/api/register", {"username": "g_" + g.lower(), "password": PASSWORD, "gender": g})
        assert r.status == 400 and r.json == {"error": "Invalid gender"}, (g, r)
    for g in ["male", "female", "other"]:
        _, j = register(chat, "g_ok_" + g, gender=g)
        assert j["user"]["gender"] == g


def test_register_duplicate_is_case_insensitive(chat):
    register(chat, "bob")
    for name in ["bob", "BOB", "Bob"]:
        r = chat.api("POST", "/api/register", {"username": name, "password": "other-pass", "gender": "male"})
        assert r.status == 400 and r.json == {"error": "Username already taken"}, (name, r)
    assert len(users_rows(chat, "bob")) == 1
    login(chat, "bob")  # the first password still holds


def test_register_sanitises_text_fields(chat):
    token, j = register(chat, "sanitize", firstName="<b>Ann</b>", lastName="x" * 60,
                        about="é" * 600)
    assert j["user"]["firstName"] == "bAnn/b", j
    assert j["user"]["lastName"] == "x" * 50, j
    assert j["user"]["about"] == "é" * 500, j  # characters, not bytes
    p = chat.api("GET", "/api/profile", token=token)
    assert p.status == 200, p
    assert (p.json["firstName"], p.json["lastName"], p.json["about"]) == ("bAnn/b", "x" * 50, "é" * 500)
    token2, j2 = register(chat, "sanitize2", about="<script>alert(1)</script>", lastName="<>")
    assert j2["user"]["about"] == "scriptalert(1)/script", j2
    assert j2["user"]["lastName"] == "", j2
    assert j2["user"]["firstName"] == "", j2  # absent: empty string


# ===================================================== check-username


def test_check_username(chat):
    r = chat.api("GET", "/api/check-username/Carol")
    assert r.status == 200 and r.json == {"available": True}, r
    register(chat, "Carol")
    for name in ["carol", "CAROL", "Carol"]:
        r = chat.api("GET", "/api/check-username/" + name)
        assert r.status == 200 and r.json == {"available": False}, (name, r)
    for name in ["ab", "bad-name", "a" * 21, "b%20c"]:
        r = chat.api("GET", "/api/check-username/" + name)
        assert r.status == 200 and r.json == {"available": False, "error": "Invalid username format"}, (name, r)


# ============================================================= login


def test_login(chat):
    register(chat, "Dora", firstName="Dora", lastName="Explorer", gender="female", about="maps")
    r = chat.api("POST", "/api/login", {"username": "DORA", "password": PASSWORD})
    assert r.status == 200, r
    assert set(r.json) == {"success", "token", "user"}, r.json
    assert r.json["success"] is True
    assert r.json["user"] == {"username": "dora", "firstName": "Dora", "lastName": "Explorer",
                              "gender": "female", "about": "maps"}, r.json
    assert claims(r.json["token"])["username"] == "dora"
    for body in ({"username": "dora", "password": "wrong-pass"},
                 {"username": "nobody", "password": PASSWORD},
                 {"username": "dora", "password": PASSWORD.upper()}):
        bad = chat.api("POST", "/api/login", body)
        assert bad.status == 401 and bad.json == {"error": "Invalid username or password"}, (body, bad)
    for body in ({"username": "dora"}, {"password": PASSWORD}, {"username": "", "password": PASSWORD},
                 {"username": "dora", "password": ""}, {}):
        bad = chat.api("POST", "/api/login", body)
        assert bad.status == 400 and bad.json == {"error": "Username and password are required"}, (body, bad)
    p = chat.api("GET", "/api/profile", token=r.json["token"])
    assert p.status == 200 and p.json["lastLogin"] not in (None, ""), p


# ================================================ verify-token, profile


def test_verify_token_and_profile(chat):
    token, _ = register(chat, "eve", firstName="Eve", lastName="Adams", gender="other", about="hi")
    v = verify(chat, token)
    assert v.status == 200, v
    assert v.json == {"valid": True, "user": {"username": "eve", "firstName": "Eve", "lastName": "Adams",
                                              "gender": "other", "about": "hi"}}, v.json
    p = chat.api("GET", "/api/profile", token=token)
    assert p.status == 200, p
    assert set(p.json) == PROFILE_KEYS, p.json
    assert {k: p.json[k] for k in USER_KEYS} == {"username": "eve", "firstName": "Eve", "lastName": "Adams",
                                                  "gender": "other", "about": "hi"}
    assert p.json["createdAt"] not in (None, ""), p.json


def test_update_profile(chat):
    token, _ = register(chat, "frank", firstName="F", lastName="L", about="old")
    r = chat.api("PUT", "/api/profile", {"about": "new <i>x</i>", "gender": "female",
                                         "firstName": "Fr<a>nk", "lastName": "Z" * 70}, token=token)
    assert r.status == 200 and r.json == {"success": True, "message": "Profile updated"}, r
    p = chat.api("GET", "/api/profile", token=token).json
    assert (p["about"], p["gender"], p["firstName"], p["lastName"]) == ("new ix/i", "female", "Frank", "Z" * 50), p
    # a partial update touches only that field
    r = chat.api("PUT", "/api/profile", {"about": "just this"}, token=token)
    assert r.status == 200 and r.json == {"success": True, "message": "Profile updated"}, r
    p = chat.api("GET", "/api/profile", token=token).json
    assert (p["about"], p["gender"], p["firstName"], p["lastName"]) == ("just this", "female", "Frank", "Z" * 50), p
    # invalid gender: 400 and nothing applied
    r = chat.api("PUT", "/api/profile", {"about": "should not stick", "gender": "robot"}, token=token)
    assert r.status == 400 and r.json == {"error": "Invalid gender"}, r
    assert chat.api("GET", "/api/profile", token=token).json["about"] == "just this"
    for body in ({}, {"username": "mallory"}, {"password": "x" * 10}):
        r = chat.api("PUT", "/api/profile", body, token=token)
        assert r.status == 400 and r.json == {"error": "No valid fields to update"}, (body, r)
    # the username cannot be changed through the profile
    assert chat.api("GET", "/api/profile", token=token).json["username"] == "frank"


# ============================================================= tokens


def test_issued_token_claims(chat):
    before = int(time.time())
    token, _ = register(chat, "grace")
    after = int(time.time())
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "HS256", header
    c = jwt.decode(token, SECRET, algorithms=["HS256"])
    for k in ("sub", "userId", "username", "ver", "iat", "exp"):
        assert k in c, (k, c)
    assert isinstance(c["userId"], int), c
    assert c["sub"] == str(c["userId"]), c
    assert c["username"] == "grace", c
    assert isinstance(c["ver"], int), c
    assert before - 5 <= c["iat"] <= after + 5, (before, c, after)
    assert c["exp"] - c["iat"] == 7 * 24 * 3600, c
    # login issues the same kind of token for the same user
    t2, _ = login(chat, "GRACE")
    c2 = jwt.decode(t2, SECRET, algorithms=["HS256"])
    assert (c2["sub"], c2["userId"], c2["username"], c2["ver"]) == (c["sub"], c["userId"], "grace", c["ver"])


def test_token_ttl_is_configurable(chat_factory):
    chat = chat_factory("--chat.token_ttl=1h")
    token, _ = register(chat, "heidi")
    c = jwt.decode(token, SECRET, algorithms=["HS256"])
    assert c["exp"] - c["iat"] == 3600, c


def test_pyjwt_token_with_server_secret_is_accepted(chat):
    token, _ = register(chat, "ivan")
    made = jwt.encode(fresh_claims(token), SECRET, algorithm="HS256")
    v = verify(chat, made)
    assert v.status == 200 and v.json["user"]["username"] == "ivan", v
    p = chat.api("GET", "/api/profile", token=made)
    assert p.status == 200 and p.json["username"] == "ivan", p


def _forge(variant, token):
    c = fresh_claims(token)
    if variant == "tampered_signature":
        head, body, sig = token.split(".")
        sig = ("A" if sig[0] != "A" else "B") + sig[1:]
        return ".".join([head, body, sig])
    if variant == "tampered_payload":
        head, _, sig = token.split(".")
        c2 = claims(token)
        c2["userId"] = c2["userId"] + 1
        c2["sub"] = str(c2["userId"])
        return ".".join([head, b64url(c2), sig])
    if variant == "alg_none":
        return b64url({"alg": "none", "typ": "JWT"}) + "." + b64url(c) + "."
    if variant == "alg_none_with_sig":
        head, _, sig = jwt.encode(c, SECRET, algorithm="HS256").split(".")
        return b64url({"alg": "none", "typ": "JWT"}) + "." + b64url(c) + "." + sig
    if variant == "hs512":
        return jwt.encode(c, SECRET, algorithm="HS512")
    if variant == "expired":
        now = int(time.time())
        return jwt.encode(dict(c, iat=now - 7200, exp=now - 3600), SECRET, algorithm="HS256")
    if variant == "nbf_future":
        return jwt.encode(dict(c, nbf=int(time.time()) + 3600), SECRET, algorithm="HS256")
    if variant == "wrong_secret":
        return jwt.encode(c, SECRET + "-other", algorithm="HS256")
    if variant == "garbage":
        return "not.a.token"
    if variant == "two_parts":
        return ".".join(token.split(".")[:2])
    raise AssertionError(variant)


FORGED = ["tampered_signature", "tampered_payload", "alg_none", "alg_none_with_sig", "hs512",
          "expired", "nbf_future", "wrong_secret", "garbage", "two_parts"]


@pytest.mark.parametrize("variant", FORGED)
def test_bad_token_is_401_with_www_authenticate(chat, variant):
    token, _ = register(chat, "judy")
    register(chat, "judy2")  # so that a tampered userId names a real user
    bad = _forge(variant, token)
    assert_invalid_token(verify(chat, bad))
    assert_invalid_token(chat.api("GET", "/api/profile", token=bad))
    assert_invalid_token(chat.api("PUT", "/api/profile", {"about": "pwned"}, token=bad))
    # nothing changed, and the genuine token still works
    v = verify(chat, token)
    assert v.status == 200 and v.json["user"]["about"] == "", v


AUTHED_ROUTES = [
    ("GET", "/api/verify-token", None),
    ("GET", "/api/profile", None),
    ("PUT", "/api/profile", {"about": "x"}),
    ("POST", "/api/auth/change-username", {"newUsername": "newname"}),
    ("POST", "/api/auth/change-password", {"currentPassword": PASSWORD, "newPassword": "abcdef1"}),
    ("DELETE", "/api/auth/delete-account", {"password": PASSWORD}),
    ("POST", "/api/logout", None),
    ("GET", "/api/rooms", None),
    ("POST", "/api/rooms", {"name": "newroom"}),
    ("GET", "/api/rooms/general/messages", None),
    ("GET", "/api/streams", None),
    ("POST", "/api/get-stream-key", {}),
]


def test_authenticated_routes_need_a_valid_token(chat):
    token, _ = register(chat, "kim")
    bad = _forge("wrong_secret", token)
    for method, path, body in AUTHED_ROUTES:
        r = chat.api(method, path, body)
        assert r.status == 401 and r.json == AUTH_REQUIRED, (method, path, r)
        r = chat.api(method, path, body, headers={"Authorization": "Bearer "})
        assert r.status == 401 and r.json in (AUTH_REQUIRED, INVALID_TOKEN), (method, path, r)
        assert_invalid_token(chat.api(method, path, body, token=bad))
    # none of that did anything
    v = verify(chat, token)
    assert v.status == 200 and v.json["user"]["username"] == "kim", v
    assert chat.api("GET", "/api/check-username/newroom").json == {"available": True}
    rooms = chat.api("GET", "/api/rooms", token=token).json["rooms"]
    assert "newroom" not in [x["id"] for x in rooms], rooms


# ======================================================= revocation


def test_change_password_revokes_old_tokens(chat):
    t1, _ = register(chat, "leo")
    t2, _ = login(chat, "leo")
    old_ver = claims(t1)["ver"]
    # failures change nothing
    r = chat.api("POST", "/api/auth/change-password", {"currentPassword": "wrong-pass", "newPassword": "newpass1"}, token=t1)
    assert r.status == 401 and r.json == {"error": "Current password is incorrect"}, r
    for body in ({"currentPassword": PASSWORD}, {"newPassword": "newpass1"}, {},
                 {"currentPassword": PASSWORD, "newPassword": "12345"},
                 {"currentPassword": PASSWORD, "newPassword": "z" * 101}):
        r = chat.api("POST", "/api/auth/change-password", body, token=t1)
        assert_error(r, 400)
    assert verify(chat, t1).status == 200
    login(chat, "leo", PASSWORD)
    # the change
    r = chat.api("POST", "/api/auth/change-password", {"currentPassword": PASSWORD, "newPassword": "newpass1"}, token=t1)
    assert r.status == 200, r
    assert set(r.json) == {"success", "message", "token"}, r.json
    assert r.json["success"] is True and r.json["message"] == "Password changed successfully", r.json
    t3 = r.json["token"]
    assert_invalid_token(verify(chat, t1))
    assert_invalid_token(verify(chat, t2))
    v = verify(chat, t3)
    assert v.status == 200 and v.json["user"]["username"] == "leo", v
    new_ver = claims(t3)["ver"]
    assert new_ver != old_ver
    # revocation is by version: a freshly signed token with the old ver fails
    assert_invalid_token(verify(chat, jwt.encode(fresh_claims(t1), SECRET, algorithm="HS256")))
    assert verify(chat, jwt.encode(fresh_claims(t3), SECRET, algorithm="HS256")).status == 200
    bad = chat.api("POST", "/api/login", {"username": "leo", "password": PASSWORD})
    assert bad.status == 401 and bad.json == {"error": "Invalid username or password"}, bad
    login(chat, "leo", "newpass1")
    rows = users_rows(chat, "leo")
    assert re.fullmatch(r"\$2b\$10\$[./A-Za-z0-9]{53}", rows[0][1]), rows


def test_change_username_revokes_old_tokens(chat):
    t1, _ = register(chat, "mia")
    register(chat, "Taken_Name")
    uid = user_id(t1)
    for name in ["ab", "bad-name", "x" * 21]:
        r = chat.api("POST", "/api/auth/change-username", {"newUsername": name}, token=t1)
        assert r.status == 400 and r.json == {"error": "Invalid username format"}, (name, r)
    for name in ["taken_name", "TAKEN_NAME"]:
        r = chat.api("POST", "/api/auth/change-username", {"newUsername": name}, token=t1)
        assert r.status == 400 and r.json == {"error": "Username already taken"}, (name, r)
    assert verify(chat, t1).status == 200  # failures revoke nothing
    r = chat.api("POST", "/api/auth/change-username", {"newUsername": "mia_new"}, token=t1)
    assert r.status == 200, r
    assert set(r.json) == {"success", "username", "token"}, r.json
    assert r.json["success"] is True and r.json["username"] == "mia_new", r.json
    t2 = r.json["token"]
    c2 = claims(t2)
    assert c2["username"] == "mia_new" and int(c2["userId"]) == uid, c2
    assert_invalid_token(verify(chat, t1))
    v = verify(chat, t2)
    assert v.status == 200 and v.json["user"]["username"] == "mia_new", v
    assert chat.api("GET", "/api/check-username/mia").json == {"available": True}
    assert chat.api("GET", "/api/check-username/mia_new").json == {"available": False}
    bad = chat.api("POST", "/api/login", {"username": "mia", "password": PASSWORD})
    assert bad.status == 401, bad
    login(chat, "mia_new")
    # mixed case is stored lowercase
    r = chat.api("POST", "/api/auth/change-username", {"newUsername": "Mia_Mixed"}, token=t2)
    assert r.status == 200, r
    t3 = r.json["token"]
    assert r.json["username"].lower() == "mia_mixed"
    assert chat.api("GET", "/api/profile", token=t3).json["username"] == "mia_mixed"
    assert len(users_rows(chat, "mia_mixed")) == 1
    assert_invalid_token(verify(chat, t2))


def test_logout_revokes_every_token(chat):
    t1, _ = register(chat, "nina")
    t2, _ = login(chat, "nina")
    register(chat, "other_user")
    t_other, _ = login(chat, "other_user")
    r = chat.api("POST", "/api/logout", token=t1)
    assert r.status == 200 and r.json["success"] is True, r
    assert_invalid_token(verify(chat, t1))
    assert_invalid_token(verify(chat, t2))
    assert_invalid_token(chat.api("POST", "/api/logout", token=t1))
    assert verify(chat, t_other).status == 200  # another user's tokens stay
    # logout leaves no session behind: a token in its answer would be one
    if isinstance(r.json.get("token"), str):
        v = verify(chat, r.json["token"])
        assert v.status == 401, ("POST /api/logout answered a token that still works", r.json, v)
    t3, _ = login(chat, "nina")
    assert verify(chat, t3).status == 200
    # the exact answer, last so that the revocation is checked anyway
    assert r.json == {"success": True}, r


def test_delete_account(chat):
    t1, _ = register(chat, "oscar")
    t2, _ = login(chat, "oscar")
    r = chat.api("DELETE", "/api/auth/delete-account", {}, token=t1)
    assert r.status == 400 and r.json == {"error": "Password is required"}, r
    r = chat.api("DELETE", "/api/auth/delete-account", {"password": "wrong-pass"}, token=t1)
    assert r.status == 401 and r.json == {"error": "Incorrect password"}, r
    assert verify(chat, t1).status == 200
    r = chat.api("DELETE", "/api/auth/delete-account", {"password": PASSWORD}, token=t1)
    assert r.status == 200 and r.json == {"success": True, "message": "Account deleted successfully"}, r
    after_delete = [verify(chat, t1), verify(chat, t2)]
    for v in after_delete:
        assert v.status != 200, v
    bad = chat.api("POST", "/api/login", {"username": "oscar", "password": PASSWORD})
    assert bad.status == 401 and bad.json == {"error": "Invalid username or password"}, bad
    assert chat.api("GET", "/api/check-username/oscar").json == {"available": True}
    # the name can be registered again, and the old tokens do not open the new account
    t_new, _ = register(chat, "oscar")
    assert verify(chat, t_new).status == 200
    for old in (t1, t2, jwt.encode(fresh_claims(t1), SECRET, algorithm="HS256")):
        v = verify(chat, old)
        assert v.status != 200, v
    # a deleted account's tokens are revoked: 401 "Invalid or expired token"
    # (docs/chat.md: deletion revokes every token), not 404
    for v in after_delete:
        assert_invalid_token(v)
    for old in (t1, t2):
        assert_invalid_token(verify(chat, old))


# ================================================ FaltuBaat password rows


def test_bcryptjs_row_inserted_in_database_logs_in(chat):
    register(chat, "someone_else")  # the schema exists and has a row
    h2a = bcryptjs_hash("faltu-pass")
    assert h2a.startswith("$2a$10$"), h2a
    h2y = "$2y$" + bcryptjs_hash("faltu-pass2")[4:]
    cols = "(username, password, gender, about, first_name, last_name)"
    chat.db.execute("INSERT INTO users " + cols + " VALUES (?, ?, ?, ?, ?, ?)",
                    ("legacy", h2a, "female", "from node", "Leg", "Acy"))
    chat.db.execute("INSERT INTO users " + cols + " VALUES (?, ?, ?, ?, ?, ?)",
                    ("legacy_y", h2y, "other", "", "", ""))
    r = chat.api("POST", "/api/login", {"username": "Legacy", "password": "faltu-pass"})
    assert r.status == 200, r
    assert r.json["user"] == {"username": "legacy", "firstName": "Leg", "lastName": "Acy",
                              "gender": "female", "about": "from node"}, r.json
    v = verify(chat, r.json["token"])
    assert v.status == 200 and v.json["user"]["username"] == "legacy", v
    bad = chat.api("POST", "/api/login", {"username": "legacy", "password": "faltu-pasS"})
    assert bad.status == 401 and bad.json == {"error": "Invalid username or password"}, bad
    r = chat.api("POST", "/api/login", {"username": "legacy_y", "password": "faltu-pass2"})
    assert r.status == 200 and r.json["user"]["username"] == "legacy_y", r


FALTUBAAT_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    username TEXT UNIQUE NOT NULL,
    password TEXT NOT NULL,
    first_name TEXT DEFAULT '',
    last_name TEXT DEFAULT '',
    gender TEXT CHECK(gender IN ('male', 'female', 'other')) NOT NULL,
    about TEXT DEFAULT '',
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    last_login DATETIME,
    is_active INTEGER DEFAULT 1
);
CREATE INDEX IF NOT EXISTS idx_users_username ON users(username);
"""


def test_existing_faltubaat_sqlite_file_is_adopted(backend, chat_factory):
    """A FaltuBaat data/faltubaat.db (WAL, its users table, a bcryptjs row)
    is migrated in place and its users log in unchanged."""
    if backend.kind != "sqlite":
        pytest.skip("FaltuBaat only ever stored its users in SQLite")
    con = sqlite3.connect(backend.db.path)
    con.execute("PRAGMA journal_mode=WAL")
    con.executescript(FALTUBAAT_SCHEMA)
    con.execute("INSERT INTO users (username, password, gender, about, first_name, last_name, last_login) "
                "VALUES (?, ?, ?, ?, ?, ?, CURRENT_TIMESTAMP)",
                ("oldtimer", bcryptjs_hash("old-password"), "male", "since 2024", "Old", "Timer"))
    con.commit()
    con.close()
    chat = chat_factory()
    r = chat.api("POST", "/api/login", {"username": "OldTimer", "password": "old-password"})
    assert r.status == 200, r
    assert r.json["user"] == {"username": "oldtimer", "firstName": "Old", "lastName": "Timer",
                              "gender": "male", "about": "since 2024"}, r.json
    token = r.json["token"]
    p = chat.api("GET", "/api/profile", token=token)
    assert p.status == 200 and p.json["createdAt"] not in (None, ""), p
    # the old row keeps working after a password change, and new users fit in
    r = chat.api("POST", "/api/auth/change-password",
                 {"currentPassword": "old-password", "newPassword": "new-password"}, token=token)
    assert r.status == 200, r
    login(chat, "oldtimer", "new-password")
    register(chat, "newcomer")
    assert chat.api("GET", "/api/check-username/oldtimer").json == {"available": False}


# ============================================================ limits


def test_body_over_10k_is_413(chat):
    def body_of(size):
        base = {"username": "big_%d" % size, "password": PASSWORD, "gender": "male", "about": ""}
        pad = size - len(json.dumps(base).encode())
        base["about"] = "a" * pad
        raw = json.dumps(base).encode()
        assert len(raw) == size
        return raw

    r = chat.api("POST", "/api/register", raw=body_of(10240))
    assert r.status == 201, r
    assert r.json["user"]["about"] == "a" * 500
    r = chat.api("POST", "/api/register", raw=body_of(10241))
    assert_error(r, 413)
    assert chat.api("GET", "/api/check-username/big_10241").json == {"available": True}
    token, _ = login(chat, "big_10240")
    r2 = chat.api("PUT", "/api/profile", raw=json.dumps({"about": "b" * 20000}), token=token)
    assert_error(r2, 413)
    assert chat.api("GET", "/api/profile", token=token).json["about"] == "a" * 500


def test_malformed_json_is_400(chat):
    token, _ = register(chat, "quinn")
    cases = [("POST", "/api/register", None), ("POST", "/api/login", None),
             ("PUT", "/api/profile", token), ("POST", "/api/rooms", token),
             ("POST", "/api/auth/change-password", token)]
    for method, path, tok in cases:
        for raw in ['{"username": "x", ', "not json", '{"a":1}}', "\xff\xfe"]:
            r = chat.api(method, path, raw=raw.encode("latin-1"), token=tok)
            assert_error(r, 400)
    # the account is untouched
    login(chat, "quinn")


def test_auth_rate_limit(chat_factory):
    chat = chat_factory("--chat.auth_rate_max=3")
    assert chat.api("POST", "/api/register", {"username": "rita", "password": PASSWORD, "gender": "female"}).status == 201
    assert chat.api("POST", "/api/login", {"username": "rita", "password": PASSWORD}).status == 200
    assert chat.api("POST", "/api/login", {"username": "rita", "password": "wrong-pass"}).status == 401
    # the 4th and later: 429, whatever the route and body; X-Forwarded-For is not believed
    for path, body, hdrs in [("/api/login", {"username": "rita", "password": PASSWORD}, None),
                             ("/api/register", {"username": "rita2", "password": PASSWORD, "gender": "male"}, None),
                             ("/api/login", {"username": "rita", "password": PASSWORD},
                              {"X-Forwarded-For": "10.1.2.3"})]:
        r = chat.api("POST", path, body, headers=hdrs)
        assert_error(r, 429)
    assert chat.api("GET", "/api/check-username/rita2").json == {"available": True}
    # other /api routes are not part of the auth budget
    r = chat.api("GET", "/api/check-username/rita")
    assert r.status == 200 and r.json == {"available": False}, r


def test_auth_rate_limit_trusts_x_forwarded_for_only_from_trusted_proxies(chat_factory):
    chat = chat_factory("--chat.auth_rate_max=2", "--limits.trusted_proxies=127.0.0.1/32")
    creds = {"username": "nobody", "password": PASSWORD}

    def attempt(xff):
        return chat.api("POST", "/api/login", creds, headers={"X-Forwarded-For": xff} if xff else None)

    assert attempt("10.0.0.1").status == 401
    assert attempt("10.0.0.1").status == 401
    assert_error(attempt("10.0.0.1"), 429)
    # another client behind the proxy has its own budget
    assert attempt("10.0.0.2").status == 401
    # the rightmost address that is not a trusted proxy is the client
    assert_error(attempt("10.0.0.9, 10.0.0.1"), 429)
    assert attempt("10.0.0.1, 10.0.0.3").status == 401
    assert attempt("10.0.0.4, 127.0.0.1").status == 401  # 10.0.0.4
    # the proxy's own requests count for 127.0.0.1
    assert attempt(None).status == 401


def test_api_rate_limit(chat_factory):
    chat = chat_factory("--chat.rate_max=5")
    for i in range(5):
        r = chat.api("GET", "/api/check-username/user%d" % i)
        assert r.status == 200, (i, r)
    r = chat.api("GET", "/api/check-username/user9")
    assert_error(r, 429)
    r = chat.api("GET", "/api/broadcast-status")
    assert_error(r, 429)


def test_api_rate_limit_is_also_per_user(chat_factory):
    """chat.rate_max counts per client IP and per user: one user coming
    from many addresses (behind a trusted proxy) still meets the limit."""
    chat = chat_factory("--chat.rate_max=4", "--limits.trusted_proxies=127.0.0.1/32")
    r = chat.api("POST", "/api/register", {"username": "roamer", "password": PASSWORD, "gender": "male"},
                 headers={"X-Forwarded-For": "10.7.0.1"})
    assert r.status == 201, r
    token = r.json["token"]
    for i in range(4):
        r = chat.api("GET", "/api/rooms", token=token, headers={"X-Forwarded-For": "10.7.1.%d" % i})
        assert r.status == 200, (i, r)
    r = chat.api("GET", "/api/rooms", token=token, headers={"X-Forwarded-For": "10.7.2.1"})
    assert_error(r, 429)
    # another address without that user's token is not limited
    r = chat.api("GET", "/api/check-username/roamer", headers={"X-Forwarded-For": "10.7.2.2"})
    assert r.status == 200 and r.json == {"available": False}, r


# ============================================================= rooms


def test_rooms(chat):
    ta, _ = register(chat, "sam")
    tb, _ = register(chat, "tia")
    r = chat.api("GET", "/api/rooms", token=ta)
    assert r.status == 200 and set(r.json) == {"rooms"}, r
    rooms = {x["id"]: x for x in r.json["rooms"]}
    for rid in ("general", "tech", "random"):
        assert rid in rooms, r.json
        assert set(rooms[rid]) == ROOM_KEYS, rooms[rid]
        assert rooms[rid]["kind"] == "room"
        assert isinstance(rooms[rid]["title"], str) and rooms[rid]["title"]
        assert isinstance(rooms[rid]["members"], int) and isinstance(rooms[rid]["joined"], bool)
    r = chat.api("POST", "/api/rooms", {"name": "book-club", "title": "Book Club"}, token=ta)
    assert r.status == 201, r
    assert r.json == {"room": {"id": "book-club", "title": "Book Club", "kind": "room",
                               "members": 1, "joined": True}}, r.json
    mine = {x["id"]: x for x in chat.api("GET", "/api/rooms", token=ta).json["rooms"]}
    assert mine["book-club"] == r.json["room"], mine
    theirs = {x["id"]: x for x in chat.api("GET", "/api/rooms", token=tb).json["rooms"]}
    assert theirs["book-club"] == {"id": "book-club", "title": "Book Club", "kind": "room",
                                   "members": 1, "joined": False}, theirs
    for name in ["book-club", "general"]:
        r = chat.api("POST", "/api/rooms", {"name": name, "title": "again"}, token=tb)
        assert r.status == 409 and r.json == {"error": "Room already exists"}, (name, r)
    for name in ["Bad", "-x", "_x", "a" * 41, "", "a b", "dm:1:2", "ab/c", "é"]:
        r = chat.api("POST", "/api/rooms", {"name": name}, token=tb)
        assert r.status == 400 and r.json == {"error": "Invalid room name"}, (name, r)
    for name in ["0", "a" * 40, "x_y-z"]:
        r = chat.api("POST", "/api/rooms", {"name": name}, token=tb)
        assert r.status == 201 and r.json["room"]["id"] == name, (name, r)
    r = chat.api("GET", "/api/rooms/book-club/messages", token=tb)
    assert r.status == 200 and r.json == {"room": "book-club", "messages": [], "more": False}, r
    r = chat.api("GET", "/api/rooms/no-such-room/messages", token=tb)
    assert r.status == 404 and r.json == {"error": "Room not found"}, r


# ============================================================ streams


def _dump_database(chat):
    """Everything stored, as text (to look for secrets)."""
    if chat.db.kind == "sqlite":
        con = sqlite3.connect(chat.db.path, timeout=10)
        try:
            return "\n".join(con.iterdump())
        finally:
            con.close()
    cl = chat.db.cluster
    r = subprocess.run([str(cl.bindir / "pg_dump"), "-h", "127.0.0.1", "-p", str(cl.port), "-U", "postgres",
                        "--data-only", chat.db.name], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _rtmp(chat, path, key):
    body = "call=%s&addr=127.0.0.1&clientid=1&app=live&name=%s&type=live&flashver=FMLE" % (
        "publish" if path.endswith("start") else "publish_done", key)
    return chat.api("POST", path, raw=body.encode(),
                    headers={"Content-Type": "application/x-www-form-urlencoded"})


def test_streams_and_stream_keys(chat_factory):
    chat = chat_factory("--chat.max_streams=3")
    token, _ = register(chat, "uma")
    r = chat.api("GET", "/api/broadcast-status")
    assert r.status == 200 and r.json == {"activeStreams": 0, "maxStreams": 3, "available": True}, r
    r = chat.api("GET", "/api/streams", token=token)
    assert r.status == 200 and r.json == {"streams": []}, r
    k1 = chat.api("POST", "/api/get-stream-key", {}, token=token)
    assert k1.status == 200 and set(k1.json) == {"streamKey", "rtmpUrl"}, k1
    assert re.fullmatch(r"[0-9a-f]{32,}", k1.json["streamKey"]) or len(k1.json["streamKey"]) >= 32, k1.json
    assert k1.json["rtmpUrl"] == "rtmp://127.0.0.1:1935/live", k1.json  # HOST from the request
    k2 = chat.api("POST", "/api/get-stream-key", {}, token=token)
    assert k2.status == 200 and set(k2.json) == {"streamKey", "rtmpUrl"}, k2
    assert k2.json["streamKey"] != k1.json["streamKey"]
    # stored hashed: neither key appears in the database
    dump = _dump_database(chat)
    assert k1.json["streamKey"] not in dump and k2.json["streamKey"] not in dump
    # the old key is revoked, the new one renames the stream to the playback id
    r = _rtmp(chat, "/stream/start", k1.json["streamKey"])
    assert r.status == 403, r
    r = _rtmp(chat, "/stream/start", k2.json["streamKey"])
    assert r.status == 302, r
    pid = r.headers.get("location")
    assert re.fullmatch(r"[0-9a-f]{24}", pid or ""), r
    live = chat.api("GET", "/api/streams", token=token).json["streams"]
    assert len(live) == 1, live
    assert set(live[0]) == {"user", "playbackId", "playbackUrl", "startedAt"}, live
    assert (live[0]["user"], live[0]["playbackId"], live[0]["playbackUrl"]) == ("uma", pid, "/hls/%s.m3u8" % pid)
    assert isinstance(live[0]["startedAt"], int)
    assert k2.json["streamKey"] not in json.dumps(live)
    assert chat.api("GET", "/api/broadcast-status").json == {"activeStreams": 1, "maxStreams": 3, "available": True}
    assert _rtmp(chat, "/stream/stop", k2.json["streamKey"]).status == 200
    assert chat.api("GET", "/api/streams", token=token).json == {"streams": []}
    assert chat.api("GET", "/api/broadcast-status").json == {"activeStreams": 0, "maxStreams": 3, "available": True}
    # going live again inside chat.stream_cooldown (10 s): 429, even with a fresh key
    k3 = chat.api("POST", "/api/get-stream-key", {}, token=token)
    assert k3.status == 200, k3
    assert _rtmp(chat, "/stream/start", k3.json["streamKey"]).status == 429
    assert chat.api("GET", "/api/streams", token=token).json == {"streams": []}


def test_stream_key_requests_are_limited_per_user(chat):
    ta, _ = register(chat, "vera")
    tb, _ = register(chat, "walt")
    keys = []
    for i in range(10):
        r = chat.api("POST", "/api/get-stream-key", {}, token=ta)
        assert r.status == 200, (i, r)
        keys.append(r.json["streamKey"])
    assert len(set(keys)) == 10
    r = chat.api("POST", "/api/get-stream-key", {}, token=ta)
    assert_error(r, 429)
    # the last key issued is the valid one, the earlier ones are revoked
    assert _rtmp(chat, "/stream/start", keys[0]).status == 403
    assert _rtmp(chat, "/stream/start", keys[-1]).status == 302
    # another user has their own budget
    r = chat.api("POST", "/api/get-stream-key", {}, token=tb)
    assert r.status == 200 and set(r.json) == {"streamKey", "rtmpUrl"}, r
