"""A real browser for the status page: Debian's ``chromium``, headless, and an HTML tree.

``dump_dom(url)`` is the DOM chromium built from the page (``--dump-dom``: after parsing,
styling and layout; the page has no script, so what is there is what the server rendered,
as a browser reads it), ``screenshot(url, path)`` a PNG of it; ``parse(html)`` makes an
:class:`Element` tree of either, with the standard library's parser, and fails on a closing
tag that does not close the element open (a page that is not well nested).

Each call uses its own profile directory (chromium refuses a profile another instance
holds) and ``--no-sandbox`` (tests run as root in a container, where chromium's sandbox
cannot start).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

CHROMIUM = "chromium"
#: elements that have no closing tag in HTML (chromium writes SVG's with one: ignored)
VOID = frozenset({"meta", "br", "img", "input", "hr", "link", "line", "rect", "path", "circle"})


class Element:
    """An element: its tag, its attributes (entities decoded), its content in order."""

    def __init__(self, tag: str, attrs: dict[str, str | None], parent: Element | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Element] = []
        #: text and elements in document order
        self.content: list[Element | str] = []

    def attr(self, name: str) -> str:
        value = self.attrs.get(name)
        assert value is not None, f"<{self.tag}> has no {name}"
        return value

    def all_text(self) -> str:
        return "".join(c if isinstance(c, str) else c.all_text() for c in self.content)

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Element]:
        """The elements below this one with ``tag`` and these attributes (``data_run_id``
        stands for ``data-run-id``; the value ``"*"``: the attribute is there)."""
        wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
        found = []
        for child in self.children:
            if (tag is None or child.tag == tag) and all(
                (name in child.attrs) if value == "*" else child.attrs.get(name) == value
                for name, value in wanted.items()
            ):
                found.append(child)
            found.extend(child.find_all(tag, **attrs))
        return found

    def one(self, tag: str | None = None, **attrs: str) -> Element:
        found = self.find_all(tag, **attrs)
        assert len(found) == 1, f"{len(found)} elements <{tag or '*'} {attrs}>, not one"
        return found[0]


class _Tree(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {}, None)
        self.open = self.root

    def _add(self, tag: str, attrs: list[tuple[str, str | None]]) -> Element:
        element = Element(tag, dict(attrs), self.open)
        self.open.children.append(element)
        self.open.content.append(element)
        return element

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element = self._add(tag, attrs)
        if tag not in VOID:
            self.open = element

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._add(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        assert self.open.tag == tag, f"</{tag}> closes <{self.open.tag}>"
        assert self.open.parent is not None
        self.open = self.open.parent

    def handle_data(self, data: str) -> None:
        self.open.content.append(data)


def parse(html: str) -> Element:
    """The document's tree; fails unless every element is closed where it should be."""
    tree = _Tree()
    tree.feed(html)
    tree.close()
    assert tree.open is tree.root, f"<{tree.open.tag}> is never closed"
    return tree.root


def _chromium(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(
            "chromium is not installed: run `bash scripts/start-docker.sh` (as root), or "
            "`apt-get install -y chromium`",
            pytrace=False,
        )
    with tempfile.TemporaryDirectory(prefix="retentiond-chromium-") as profile:
        done = subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--disable-gpu",
                "--no-sandbox",
                "--no-first-run",
                f"--user-data-dir={profile}",
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    assert done.returncode == 0, f"chromium failed ({done.returncode}): {done.stderr[-2000:]}"
    return done


def dump_dom(url: str) -> str:
    """The DOM chromium built from ``url``, serialized."""
    return _chromium("--dump-dom", url).stdout


def screenshot(url: str, path: Path, width: int = 1280, height: int = 1800) -> Path:
    """A PNG of ``url`` as chromium shows it in a ``width`` x ``height`` window."""
    _chromium(f"--screenshot={path}", f"--window-size={width},{height}", "--hide-scrollbars", url)
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), f"{path} is not a PNG"
    return path
