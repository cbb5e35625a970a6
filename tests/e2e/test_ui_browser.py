"""The web pages in a real browser: what a team member does on them after a push.

skopeo pushes an image built here, oras-py a signature that refers to it; then
headless Chromium finds the repository, opens the tag, copies the pull command,
sees the referrer, and deletes a tag. With access control on, it signs in and
out and sees only what the user may pull. Each step leaves a screenshot in the
test's temporary folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.access import USERS, htpasswd_config
from tests.pushing import ACCEPT_MANIFESTS, push_image

from .browser import Browser, browser, chromium  # noqa: F401 - fixtures
from .clients import skopeo
from .images import Layout, image
from .test_clients_oras import SIGNATURE, client, push_typed_artifact

pytestmark = pytest.mark.e2e


def _by(kind: str) -> str:
    from selenium.webdriver.common.by import By

    return str(getattr(By, kind))


def _click(page: Browser, kind: str, value: str) -> None:
    page.driver.find_element(_by(kind), value).click()  # type: ignore[attr-defined]


def _wait_for(page: Browser, kind: str, value: str) -> object:
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(page.driver, 30).until(  # type: ignore[arg-type]
        expected_conditions.presence_of_element_located((_by(kind), value))
    )


def _tags(page: Browser) -> list[str]:
    rows = page.driver.find_elements(_by("CSS_SELECTOR"), "#tags tbody tr")  # type: ignore[attr-defined]
    return [row.get_attribute("data-tag") for row in rows]


def test_find_copy_referrers_and_delete(registry_factory, browser: Browser, tmp_path: Path) -> None:  # noqa: F811
    registry = registry_factory({"storage": {"delete": {"enabled": True}}}, workers=2)
    host = f"127.0.0.1:{registry.port}"
    built = image(
        [{"app/hello.txt": b"hello from the web page test\n"}],
        config_extra={
            "created": "2026-03-04T05:06:07Z",
            "config": {
                "Entrypoint": ["/bin/sh", "-c"],
                "Cmd": ["cat /app/hello.txt"],
                "Env": ["PATH=/bin", "GREETING=<b>hi</b>"],
                "Labels": {"org.opencontainers.image.title": "web <demo>"},
            },
            "history": [{"created_by": "COPY hello.txt /app/", "created": "2026-03-04T05:06:07Z"}],
        },
    )
    Layout(tmp_path / "layout", {"v1": built}).write()
    for tag in ("v1", "v2"):
        skopeo(
            "copy",
            "--dest-tls-verify=false",
            f"oci:{tmp_path / 'layout'}:v1",
            f"docker://{host}/team/web:{tag}",
        )
    signature = tmp_path / "signature.sig"
    signature.write_bytes(b"signed by the release key\n")
    signed = push_typed_artifact(
        client(host),
        f"{host}/team/web:sig",
        signature,
        "application/vnd.example.signature.blob",
        SIGNATURE,
        subject={
            "mediaType": built.media_type,
            "digest": built.digest,
            "size": len(built.manifest),
        },
    )
    # A repository that must not match the search.
    with httpx.Client(base_url=registry.url, headers=ACCEPT_MANIFESTS) as api:
        push_image(api, "other/thing", "latest")

    browser.open(registry.url + "/")
    _wait_for(browser, "ID", "repositories")
    assert browser.driver.current_url == registry.url + "/ui/"  # type: ignore[attr-defined]
    browser.shot("1-repositories")
    search = browser.driver.find_element(_by("ID"), "q")  # type: ignore[attr-defined]
    search.send_keys("web\n")
    _wait_for(browser, "LINK_TEXT", "team/web")
    listed = browser.driver.find_elements(_by("CSS_SELECTOR"), "#repositories tbody th a")  # type: ignore[attr-defined]
    assert [link.text for link in listed] == ["team/web"]
    browser.shot("2-search")

    _click(browser, "LINK_TEXT", "team/web")
    _wait_for(browser, "ID", "tags")
    assert _tags(browser) == ["sig", "v1", "v2"]
    row = browser.driver.find_element(_by("CSS_SELECTOR"), 'tr[data-tag="v1"]')  # type: ignore[attr-defined]
    assert built.digest[:19] in row.text
    assert "linux/amd64" in row.text and "2026-03-04 05:06 UTC" in row.text
    browser.shot("3-repository")

    # The copy button puts the real address's pull command on the clipboard.
    browser.driver.execute_cdp_cmd(  # type: ignore[attr-defined]
        "Browser.grantPermissions",
        {"origin": registry.url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    row.find_element(_by("CSS_SELECTOR"), "button.copy").click()
    _wait_for(browser, "XPATH", '//tr[@data-tag="v1"]//span[@class="copied" and text()="Copied"]')
    copied = browser.driver.execute_async_script(  # type: ignore[attr-defined]
        "navigator.clipboard.readText().then(arguments[0], e => arguments[0]('failed: ' + e))"
    )
    assert copied == f"docker pull {host}/team/web:v1"
    browser.shot("4-copied")

    _click(browser, "LINK_TEXT", "v1")
    _wait_for(browser, "ID", "layers")
    page = browser.text()
    assert built.digest in page
    assert "/bin/sh -c" in page and "GREETING=<b>hi</b>" in page  # Shown as text, not markup.
    assert "web <demo>" in page and "COPY hello.txt /app/" in page
    layer_rows = browser.driver.find_elements(_by("CSS_SELECTOR"), "#layers tbody tr")  # type: ignore[attr-defined]
    assert len(layer_rows) == 1
    referrers = browser.driver.find_element(_by("ID"), "referrers")  # type: ignore[attr-defined]
    assert SIGNATURE in referrers.text and signed[:19] in referrers.text
    browser.shot("5-image")
    referrers.find_element(_by("TAG_NAME"), "a").click()
    _wait_for(browser, "ID", "digest")
    assert signed in browser.text() and f"Refers to\n{built.digest}" in browser.text()
    browser.shot("6-referrer")

    # Delete v2 with a confirmation; v1 and the manifest stay.
    browser.open(f"{registry.url}/ui/repository?name=team/web")
    _click(browser, "CSS_SELECTOR", 'a[aria-label="Delete tag v2"]')
    _wait_for(browser, "ID", "confirm-delete")
    assert "The tag v2 of team/web will be removed" in browser.text()
    browser.shot("7-confirm-delete")
    _click(browser, "ID", "confirm-delete")
    _wait_for(browser, "ID", "deleted")
    assert _tags(browser) == ["sig", "v1"]
    browser.shot("8-deleted")
    with httpx.Client(base_url=registry.url, headers=ACCEPT_MANIFESTS) as api:
        assert api.get("/v2/team/web/tags/list").json()["tags"] == ["sig", "v1"]
        assert api.head(f"/v2/team/web/manifests/{built.digest}").status_code == 200

    # Readable on a phone: nothing wider than the screen but the tables' own scroll areas.
    browser.driver.set_window_size(390, 844)  # type: ignore[attr-defined]
    browser.open(f"{registry.url}/ui/repository?name=team/web")
    _wait_for(browser, "ID", "tags")
    overflow = browser.driver.execute_script(  # type: ignore[attr-defined]
        "return document.documentElement.scrollWidth - window.innerWidth"
    )
    assert overflow <= 0
    browser.shot("9-phone")
    for shot in ("1-repositories", "3-repository", "5-image", "8-deleted", "9-phone"):
        assert (browser.shots / f"{shot}.png").stat().st_size > 1000


def test_sign_in_shows_only_what_the_user_may_pull(
    registry_factory,
    browser: Browser,  # noqa: F811
    tmp_path: Path,
) -> None:
    access = {
        "admins": ["admin"],
        "default": {"anonymous": [], "authenticated": []},
        "rules": [
            {"repositories": ["alice/**"], "users": ["alice"], "actions": ["pull", "push"]},
            {"repositories": ["bob/**"], "users": ["bob"], "actions": ["pull", "push", "delete"]},
        ],
    }
    registry = registry_factory(
        {"storage": {"delete": {"enabled": True}}, **htpasswd_config(tmp_path, access)}
    )
    with httpx.Client(
        base_url=registry.url, headers=ACCEPT_MANIFESTS, auth=("admin", USERS["admin"])
    ) as api:
        push_image(api, "alice/app", "v1")
        push_image(api, "bob/app", "v1")

    browser.open(registry.url + "/ui/")
    _wait_for(browser, "ID", "empty")
    assert "alice/app" not in browser.text() and "bob/app" not in browser.text()
    browser.shot("1-anonymous")

    _click(browser, "ID", "sign-in")
    _wait_for(browser, "ID", "user").send_keys("alice")  # type: ignore[attr-defined]
    browser.driver.find_element(_by("ID"), "password").send_keys("wrong\n")  # type: ignore[attr-defined]
    assert "Wrong user name or password" in _wait_for(browser, "ID", "sign-in-error").text  # type: ignore[attr-defined]
    browser.shot("2-wrong-password")
    browser.driver.find_element(_by("ID"), "user").send_keys("alice")  # type: ignore[attr-defined]
    browser.driver.find_element(_by("ID"), "password").send_keys(USERS["alice"] + "\n")  # type: ignore[attr-defined]
    assert _wait_for(browser, "ID", "signed-in-user").text == "alice"  # type: ignore[attr-defined]
    names = browser.driver.find_elements(_by("CSS_SELECTOR"), "#repositories tbody th a")  # type: ignore[attr-defined]
    assert [link.text for link in names] == ["alice/app"]
    browser.shot("3-alice")

    _click(browser, "LINK_TEXT", "alice/app")
    _wait_for(browser, "ID", "tags")
    assert "Delete" not in browser.text()  # alice may not delete.
    browser.open(f"{registry.url}/ui/repository?name=bob/app")
    assert "No such repository, or you may not pull it." in browser.text()
    browser.shot("4-not-allowed")

    _click(browser, "ID", "sign-out")
    _wait_for(browser, "ID", "empty")
    assert "alice/app" not in browser.text()
    assert browser.driver.find_elements(_by("ID"), "signed-in-user") == []  # type: ignore[attr-defined]
    browser.shot("5-signed-out")

    # bob may delete in his repository: the link is there for him.
    _click(browser, "ID", "sign-in")
    _wait_for(browser, "ID", "user").send_keys("bob")  # type: ignore[attr-defined]
    browser.driver.find_element(_by("ID"), "password").send_keys(USERS["bob"] + "\n")  # type: ignore[attr-defined]
    _wait_for(browser, "ID", "signed-in-user")
    browser.open(f"{registry.url}/ui/repository?name=bob/app")
    _wait_for(browser, "CSS_SELECTOR", 'a[aria-label="Delete tag v1"]')
    browser.shot("6-bob")


def test_keyboard_reaches_search_and_results(registry_factory, browser: Browser) -> None:  # noqa: F811
    registry = registry_factory()
    with httpx.Client(base_url=registry.url, headers=ACCEPT_MANIFESTS) as api:
        push_image(api, "keyboard/app", "v1", config=json.dumps({"os": "linux"}).encode())
    from selenium.webdriver.common.keys import Keys

    browser.open(registry.url + "/ui/")
    _wait_for(browser, "ID", "repositories")
    body = browser.driver.find_element(_by("TAG_NAME"), "body")  # type: ignore[attr-defined]
    body.send_keys(Keys.TAB)
    focused = browser.driver.switch_to.active_element  # type: ignore[attr-defined]
    assert focused.text == "Skip to content"
    focused.send_keys(Keys.ENTER)
    # Tab onwards from the main content to the search field, type, and submit.
    for _ in range(10):
        browser.driver.switch_to.active_element.send_keys(Keys.TAB)  # type: ignore[attr-defined]
        if browser.driver.switch_to.active_element.get_attribute("id") == "q":  # type: ignore[attr-defined]
            break
    field = browser.driver.switch_to.active_element  # type: ignore[attr-defined]
    assert field.get_attribute("id") == "q"
    field.send_keys("keyboard" + Keys.ENTER)
    _wait_for(browser, "LINK_TEXT", "keyboard/app")
    browser.shot("keyboard")
