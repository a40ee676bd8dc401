"""An article's image from another site is not loaded by Debian's chromium unless KB_IMAGE_ORIGINS lists that site
(real model, real `kb serve`, a counting image server on another origin)."""
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import FIXTURES, free_port, running_server

pytestmark = pytest.mark.model
PIXEL = bytes.fromhex("47494638396101000100800000000000ffffff21f90401000000002c00000000010001000002024401003b")


@pytest.fixture(scope="module")
def tracker():
    """An image server on another origin that counts what it is asked for."""
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            hits.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "image/gif")
            self.send_header("Content-Length", str(len(PIXEL)))
            self.end_headers()
            self.wfile.write(PIXEL)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory, embedder, tracker):
    """The fixture articles plus one that embeds an image of the tracker's."""
    from indexer.build import build_index
    from kb.settings import load_settings

    origin, _ = tracker
    root = tmp_path_factory.mktemp("images")
    content = root / "content"
    shutil.copytree(FIXTURES / "content", content)
    (content / "Outlook" / "outlook-signature-images.md").write_text(
        "---\ntitle: Outlook signature images do not show\nproduct: Outlook\n---\n"
        "Images in an Outlook signature can be blocked by the recipient's settings.\n\n"
        f"![Signature settings]({origin}/pixel.gif?reader=agent)\n\n"
        "Ask the recipient to allow pictures from the sender, or attach the logo instead.\n", encoding="utf-8")
    build_index(load_settings({}, content_dir=content, index_dir=root / "index"), embedder, progress=False)
    return root / "index"


def open_article(browser, base: str) -> list[str]:
    """Load the article page in chromium; the images that did load (natural width > 0), by src."""
    context = browser.new_context(base_url=base)
    page = context.new_page()
    page.goto("/articles/Outlook/outlook-signature-images", wait_until="networkidle")
    loaded = page.eval_on_selector_all("article img, main img", "els => els.filter(e => e.complete && "
                                       "e.naturalWidth > 0).map(e => e.getAttribute('src'))")
    context.close()
    return loaded


def test_an_image_from_another_site_is_not_loaded_by_default(browser, index_dir, tmp_path, tracker):
    origin, hits = tracker
    hits.clear()
    with running_server(index_dir, tmp_path) as (base, _):
        loaded = open_article(browser, base)
    assert hits == []  # the other site never learnt that the article was read
    assert not any(src.startswith(origin) for src in loaded)


def test_an_image_from_a_listed_origin_is_loaded(browser, index_dir, tmp_path, tracker):
    origin, hits = tracker
    hits.clear()
    with running_server(index_dir, tmp_path, env={"KB_IMAGE_ORIGINS": origin}) as (base, _):
        loaded = open_article(browser, base)
    assert hits == ["/pixel.gif?reader=agent"]
    assert f"{origin}/pixel.gif?reader=agent" in loaded
