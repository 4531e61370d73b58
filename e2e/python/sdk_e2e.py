#!/usr/bin/env python3
"""End-to-end checks: drive the OFFICIAL Sinch Python SDK (`sinch==1.1.4`, the
last release that has Verification; 2.x removed it) against a running verifyd
in dev-inbox mode.

Only the SDK talks to the Verification API. The exceptions are reading the OTP
/ CLI from verifyd's dev inbox (GET /inbox/v1/messages?to=..., no auth) and the
plain HTTP GET on a seamless targetUri (what a handset does).

Environment:
  VERIFYD_URL     base URL with scheme, no trailing slash, e.g. http://127.0.0.1:40123
  VERIFYD_KEY     application key
  VERIFYD_SECRET  application secret (base64)

Output: one line per check ("ok - ..." / "not ok - ...: detail"), then a
summary line "N passed, M failed". Exit 0 iff M == 0 (exit 2 on bad config).

SDK quirks (read from sinch/domains/verification/** in the 1.1.4 wheel):
* No constructor argument for the host: set
  `client.configuration.verification_origin = "host:port"` (NO scheme) and
  `client.configuration.disable_https = True` (the scheme comes from that flag).
* Python sends method "flashCall" (camelCase, `VerificationMethod.FLASH_CALL`)
  in start/report bodies; we also pass that enum value to get_by_identity, as a
  user of this SDK would, so the server must accept it case-insensitively.
* start_sms puts only the FIRST non-null of code_type/expiry/template into
  `smsOptions`; the others leak to the top level of the body (e.g. `expiry`).
* start_phone_call has no speech-locale parameter; the deprecated
  start_callout(speech_locale=...) is the only way to send calloutOptions.
* Start responses are dataclasses chosen by the REQUEST method: `.id`,
  `.method`, `._links`, `.sms.template`, `.flash_call.cli_filter`,
  `.flash_call.interception_timeout`, `.seamless.target_uri`.
* Status/report responses read snake_case keys (`country_id`,
  `verification_timestamp`, `call_complete`) out of a camelCase body, so those
  attributes are ALWAYS None: countryId / callComplete cannot be asserted here.
* Errors: any status >= 400 raises `VerificationException` (subclass of
  `SinchException`) with `str(e)` = body["message"], `e.response_status_code`
  = HTTP status, `e.http_response.body` = parsed JSON. A body without
  "message" makes the SDK raise KeyError instead; a non-JSON body raises a
  plain SinchException.
"""

import base64
import json
import os
import random
import re
import secrets
import sys
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid
import time

from sinch import SinchClient
from sinch.domains.verification.enums import VerificationMethod
from sinch.domains.verification.exceptions import VerificationException

# ---------------------------------------------------------------------------
# configuration

BASE = os.environ.get("VERIFYD_URL", "")
KEY = os.environ.get("VERIFYD_KEY", "")
SECRET = os.environ.get("VERIFYD_SECRET", "")
if not BASE or not KEY or not SECRET:
    print(
        "usage: VERIFYD_URL=http://127.0.0.1:PORT VERIFYD_KEY=... VERIFYD_SECRET=<base64> "
        "python sdk_e2e.py",
        file=sys.stderr,
    )
    sys.exit(2)
_parsed = urllib.parse.urlsplit(BASE)
if _parsed.scheme not in ("http", "https") or not _parsed.netloc or _parsed.path not in ("",):
    print("VERIFYD_URL must look like http://host:port (no path, no trailing slash)", file=sys.stderr)
    sys.exit(2)
ORIGIN = _parsed.netloc  # "127.0.0.1:40123" -- py1 wants host[:port] without scheme


def make_client(secret):
    """Exactly what a user of sinch 1.1.4 writes to point it at another host."""
    c = SinchClient(application_key=KEY, application_secret=secret)
    c.configuration.verification_origin = ORIGIN
    c.configuration.disable_https = _parsed.scheme == "http"
    return c


client = make_client(SECRET)
verifications = client.verification.verifications
status = client.verification.verification_status

# Plain urllib for the non-SDK calls; never go through an env proxy for localhost.
_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# ---------------------------------------------------------------------------
# tiny test harness

passed = 0
failed = 0


class CheckFailed(Exception):
    pass


def expect(cond, detail):
    if not cond:
        raise CheckFailed(detail)


def expect_eq(actual, expected, what):
    expect(actual == expected, f"{what}: expected {expected!r}, got {actual!r}")


def one_line(s):
    return " ".join(str(s).split())


def describe_error(e):
    if isinstance(e, CheckFailed):
        return one_line(e)
    if isinstance(e, VerificationException):
        body = getattr(e.http_response, "body", None)
        return f"VerificationException status={e.response_status_code} message={one_line(e)} body={body!r}"
    if isinstance(e, KeyError):
        # py1 does response.body["message"] on every error response.
        return f"KeyError {e} (SDK error path: error body without 'message'?)"
    last = traceback.extract_tb(e.__traceback__)[-1] if e.__traceback__ else None
    where = f" at {os.path.basename(last.filename)}:{last.lineno}" if last else ""
    return f"{type(e).__name__}: {one_line(e)}{where}"


def check(name, fn):
    """Run one named check; fn raises on failure. Returns True on success."""
    global passed, failed
    try:
        fn()
    except Exception as e:  # noqa: BLE001 -- every failure is reported, never fatal
        failed += 1
        print(f"not ok - {name}: {describe_error(e)}", flush=True)
        return False
    passed += 1
    print(f"ok - {name}", flush=True)
    return True


# ---------------------------------------------------------------------------
# helpers

_used_numbers = set()


def random_number():
    """Distinct random Swedish mobile (+4670 + 7 digits) per use."""
    while True:
        n = "+4670" + "".join(random.choice("0123456789") for _ in range(7))
        if n not in _used_numbers:
            _used_numbers.add(n)
            return n


def identity(endpoint):
    return {"type": "number", "endpoint": endpoint}


def inbox_message(to, verification_id):
    """Poll the dev inbox (max ~5 s) for the message of `verification_id`."""
    url = f"{BASE}/inbox/v1/messages?to={urllib.parse.quote(to, safe='')}"
    last = "no request made"
    for _ in range(50):
        try:
            with _http.open(url, timeout=10) as res:
                body = json.loads(res.read().decode("utf-8"))
        except urllib.error.HTTPError as e:
            last = f"GET {url} -> HTTP {e.code}"
        else:
            expect(isinstance(body, dict) and isinstance(body.get("messages"), list),
                   f"inbox body has no messages array: {body!r}")
            for msg in body["messages"]:
                if msg.get("verificationId") == verification_id:
                    expect_eq(msg.get("to"), to, "inbox message .to")
                    return msg
            last = f"no inbox message with verificationId {verification_id} among {len(body['messages'])}"
        time.sleep(0.1)
    raise CheckFailed(last)


def expect_links(res):
    """`_links`: rel status (GET) + rel report (PUT), absolute .../verifications/id/{id} URLs."""
    links = res._links
    expect(isinstance(links, list), f"_links is not a list: {links!r}")
    for rel, method in (("status", "GET"), ("report", "PUT")):
        link = next((l for l in links if l.get("rel") == rel), None)
        expect(link is not None, f'_links has no rel "{rel}": {links!r}')
        expect_eq(link.get("method"), method, f"_links[{rel}].method")
        href = link.get("href")
        expect(isinstance(href, str) and re.match(r"^https?://", href)
               and href.endswith(f"/verification/v1/verifications/id/{res.id}"),
               f"_links[{rel}].href is not an absolute .../verifications/id/{res.id} URL: {href!r}")


def expect_id(res):
    expect(isinstance(res.id, str) and res.id, f"response has no id: {res!r}")


def expect_price(res):
    """`price` is passed through as the raw dict: {"verificationPrice": {currencyId, amount}}."""
    vp = (res.price or {}).get("verificationPrice") if isinstance(res.price, dict) else None
    expect(isinstance(vp, dict) and isinstance(vp.get("amount"), (int, float))
           and not isinstance(vp.get("amount"), bool)
           and isinstance(vp.get("currencyId"), str) and len(vp["currencyId"]) == 3,
           f"price.verificationPrice missing/invalid: {res.price!r}")


def wrong_code_for(code):
    s = str(code)
    wrong = re.sub(r"\d", lambda m: str((int(m.group(0)) + 1) % 10), s)
    return wrong if wrong != s else s + "x"


def expect_sdk_error(fn, http_status):
    """fn must raise VerificationException for HTTP `http_status` with a Sinch error body."""
    try:
        res = fn()
    except VerificationException as e:
        expect_eq(e.response_status_code, http_status, "error HTTP status")
        expect(str(e).strip() != "", "VerificationException has an empty message")
        body = e.http_response.body
        code = body.get("errorCode") if isinstance(body, dict) else None
        expect(isinstance(code, int) and not isinstance(code, bool)
               and len(str(code)) == 5 and str(code).startswith(str(http_status)),
               f"error body errorCode is not a {http_status}xx number: {body!r}")
        return
    # Any other exception type propagates and is reported by check().
    raise CheckFailed(f"expected HTTP {http_status} error, call succeeded with {res!r}")


TAG = secrets.token_hex(4)

# ---------------------------------------------------------------------------
# SMS


def sms_flow():
    number = random_number()
    reference = f"e2e-py-sms-{TAG}-{secrets.token_hex(4)}"
    custom = f"python e2e custom {TAG}"
    st = {}

    def start():
        # py1 body: smsOptions={"codeType": "Numeric"} and expiry leaked to top level.
        r = verifications.start_sms(
            identity=identity(number), reference=reference, custom=custom,
            expiry="00:05:00", code_type="Numeric",
        )
        st["r"] = r
        expect_id(r)
        expect_eq(r.method, "sms", "method")
        expect(r.sms is not None and isinstance(r.sms.template, str) and "{{CODE}}" in r.sms.template,
               f"sms.template lacks {{{{CODE}}}}: {r.sms!r}")
        expect_links(r)

    if not check("sms start", start):
        return
    vid = st["r"].id

    def inbox():
        msg = inbox_message(number, vid)
        code = msg.get("code")
        expect(isinstance(code, str) and re.fullmatch(r"\d+", code), f"codeType Numeric but inbox code is {code!r}")
        expect(isinstance(msg.get("body"), str) and code in msg["body"],
               f"SMS body does not contain the code: {msg.get('body')!r}")
        st["code"] = code

    if not check("sms inbox code", inbox):
        return
    code = st["code"]

    def report_wrong():
        r = verifications.report_sms_by_id(vid, wrong_code_for(code))
        expect_eq(r.method, "sms", "method")
        expect_eq(r.status, "FAIL", "status")
        expect_eq(r.reason, "Invalid code", "reason")

    check("sms report wrong code by id -> FAIL / Invalid code", report_wrong)

    def report_right():
        r = verifications.report_sms_by_identity(number, code)
        expect_eq(r.id, vid, "id")
        expect_eq(r.method, "sms", "method")
        expect_eq(r.status, "SUCCESSFUL", "status")

    check("sms report right code by identity -> SUCCESSFUL", report_right)

    def by_id():
        s = status.get_by_id(vid)
        expect_eq(s.id, vid, "id")
        expect_eq(s.method, "sms", "method")
        expect_eq(s.status, "SUCCESSFUL", "status")
        expect_eq((s.identity or {}).get("type"), "number", "identity.type")
        expect_eq((s.identity or {}).get("endpoint"), number, "identity.endpoint")
        expect_eq(s.reference, reference, "reference")
        expect_price(s)
        # s.country_id is always None in py1 (reads "country_id"): not asserted.

    check("sms status get_by_id", by_id)

    def by_reference():
        s = status.get_by_reference(reference)
        expect_eq(s.id, vid, "id")
        expect_eq(s.status, "SUCCESSFUL", "status")

    check("sms status get_by_reference", by_reference)

    def by_identity():
        s = status.get_by_identity(number, VerificationMethod.SMS.value)
        expect_eq(s.id, vid, "id")
        expect_eq(s.method, "sms", "method")
        expect_eq(s.status, "SUCCESSFUL", "status")

    check("sms status get_by_identity", by_identity)


# ---------------------------------------------------------------------------
# Flash call


def flashcall_flow():
    number = random_number()
    st = {}

    def start():
        # py1 sends "method": "flashCall".
        r = verifications.start_flash_call(identity=identity(number), dial_timeout=10)
        st["r"] = r
        expect_id(r)
        expect_eq(r.method, "flashcall", "method (response discriminator must be lowercase)")
        fc = r.flash_call
        expect(fc is not None and isinstance(fc.cli_filter, str) and fc.cli_filter,
               f"flashCall.cliFilter missing: {fc!r}")
        expect(isinstance(fc.interception_timeout, int) and not isinstance(fc.interception_timeout, bool),
               f"flashCall.interceptionTimeout is not an integer: {fc.interception_timeout!r}")
        expect_links(r)

    if not check("flashcall start", start):
        return
    r = st["r"]

    def inbox():
        msg = inbox_message(number, r.id)
        cli = msg.get("code")
        expect(isinstance(cli, str) and re.fullmatch(r"\+[1-9]\d{6,14}", cli), f"inbox CLI is not E.164: {cli!r}")
        # The filter is written for JS/Java regex engines; the simple patterns
        # used in practice ("(.*)1234(.*)", "^\\+4670...") mean the same in Python.
        expect(re.search(r.flash_call.cli_filter, cli), f"cliFilter {r.flash_call.cli_filter} does not match CLI {cli}")
        st["cli"] = cli

    if not check("flashcall inbox CLI matches cliFilter", inbox):
        return

    def report():
        rep = verifications.report_flash_call_by_id(r.id, st["cli"])
        expect_eq(rep.method, "flashcall", "method")
        expect_eq(rep.status, "SUCCESSFUL", "status")

    check("flashcall report by id -> SUCCESSFUL", report)

    def by_identity():
        # The SDK's own enum value is "flashCall" (camelCase) -> GET .../flashCall/number/+46...
        s = status.get_by_identity(number, VerificationMethod.FLASH_CALL.value)
        expect_eq(s.id, r.id, "id")
        expect_eq(s.method, "flashcall", "method")
        expect_eq(s.status, "SUCCESSFUL", "status")
        # s.call_complete is always None in py1 (reads "call_complete"): not asserted.

    check("flashcall status get_by_identity (method flashCall)", by_identity)


# ---------------------------------------------------------------------------
# Phone call (wire method "callout")


def callout_flow():
    number = random_number()
    st = {}

    def start():
        # start_phone_call cannot send a locale; the deprecated start_callout can.
        r = verifications.start_callout(identity=identity(number), speech_locale="en-US")
        st["r"] = r
        expect_id(r)
        expect_eq(r.method, "callout", "method")
        expect_links(r)

    if not check("callout start (start_callout)", start):
        return
    r = st["r"]

    def inbox():
        msg = inbox_message(number, r.id)
        code = msg.get("code")
        expect(isinstance(code, str) and code, f"inbox code missing: {msg!r}")
        st["code"] = code

    if not check("callout inbox code", inbox):
        return

    def report():
        rep = verifications.report_phone_call_by_identity(number, st["code"])
        expect_eq(rep.id, r.id, "id")
        expect_eq(rep.method, "callout", "method")
        expect_eq(rep.status, "SUCCESSFUL", "status")

    check("callout report by identity -> SUCCESSFUL", report)

    def by_id():
        s = status.get_by_id(r.id)
        expect_eq(s.id, r.id, "id")
        expect_eq(s.method, "callout", "method")
        expect_eq(s.status, "SUCCESSFUL", "status")

    check("callout status get_by_id", by_id)


# ---------------------------------------------------------------------------
# Data verification (wire method "seamless")


def seamless_flow():
    number = random_number()
    st = {}

    def start():
        # start_data (start_seamless is the deprecated alias; same request).
        r = verifications.start_data(identity=identity(number))
        st["r"] = r
        expect_id(r)
        expect_eq(r.method, "seamless", "method")
        uri = r.seamless.target_uri if r.seamless is not None else None
        expect(isinstance(uri, str) and re.match(r"^https?://", uri),
               f"seamless.targetUri missing/not absolute: {r.seamless!r}")

    if not check("seamless start (start_data)", start):
        return
    r = st["r"]

    def inbox():
        msg = inbox_message(number, r.id)
        expect_eq(msg.get("body"), r.seamless.target_uri, "inbox body")
        expect_eq(msg.get("code"), None, "inbox code")

    check("seamless inbox message carries targetUri", inbox)

    def hit():
        # What the handset does over mobile data; urllib follows redirects.
        try:
            with _http.open(r.seamless.target_uri, timeout=10) as res:
                res.read()
                code = res.status
        except urllib.error.HTTPError as e:
            code = e.code
        expect_eq(code, 200, "HTTP status")

    if not check("seamless GET targetUri -> 200", hit):
        return

    def by_id():
        s = status.get_by_id(r.id)
        expect_eq(s.id, r.id, "id")
        expect_eq(s.method, "seamless", "method")
        expect_eq(s.status, "SUCCESSFUL", "status")

    check("seamless status get_by_id -> SUCCESSFUL", by_id)


# ---------------------------------------------------------------------------
# Errors


def error_flows():
    def not_found():
        def call():
            return status.get_by_id(str(uuid.uuid4()))
        expect_sdk_error(call, 404)

    check("error: get_by_id unknown id -> 404", not_found)

    def invalid_number():
        expect_sdk_error(lambda: verifications.start_sms(identity=identity("+4813")), 400)

    check("error: start with invalid number +4813 -> 400", invalid_number)

    def wrong_secret():
        while True:
            wrong = base64.b64encode(secrets.token_bytes(16)).decode("ascii")
            if wrong != SECRET:
                break
        bad = make_client(wrong)
        expect_sdk_error(lambda: bad.verification.verifications.start_sms(identity=identity(random_number())), 401)

    check("error: wrong application secret -> 401", wrong_secret)


# ---------------------------------------------------------------------------


def main():
    global failed
    for flow in (sms_flow, flashcall_flow, callout_flow, seamless_flow, error_flows):
        try:
            flow()
        except Exception as e:  # noqa: BLE001
            failed += 1
            print(f"not ok - unexpected harness error in {flow.__name__}: {describe_error(e)}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
