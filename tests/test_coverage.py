"""search/coverage.py: the products a knowledge base covers (from its titles) and other vendors' products it never
mentions, and which query heads are about those alone."""
from search.coverage import Coverage, covered_products, other_products

TITLES = ["Outlook keeps asking for a password", "Can't open attachments in Outlook", "Fix sync in OneDrive",
          "Files stuck in OneDrive", "Sign-in error in Teams", "Teams camera not working",
          "Error when you Share a file", "Can't share a file with a guest"]


def test_covered_products_are_the_proper_nouns_of_several_titles_and_the_product_fields():
    covered = covered_products(TITLES, {"SkypeforBusiness", "Microsoft365"})
    assert {"outlook", "onedrive", "teams", "skypeforbusiness", "microsoft365"} <= covered
    assert "share" not in covered and "error" not in covered  # capitalised in one title of two: ordinary words
    assert "fix" not in covered and "sign" not in covered  # one title only
    assert "can" not in covered  # a stop word


def test_the_shipped_list_reads_words_and_skips_comments():
    products = other_products()
    assert {"zoom", "slack", "jira", "docusign", "whatsapp"} <= products
    assert not any(p.startswith("#") or " " in p or p != p.lower() for p in products)
    assert not {"teams", "outlook", "meet", "box", "signal"} & products  # Microsoft's own; ordinary words


def test_a_head_about_only_an_uncovered_product_is_outside():
    coverage = Coverage.of(TITLES, (), {"outlook": 10, "teams": 9, "screen": 4}, frozenset({"zoom", "slack"}))
    assert coverage.outside("Zoom cannot share screen") == "Zoom"  # as written
    assert coverage.outside("Tombol Share Screen di Zoom abu-abu") == "Zoom"
    assert coverage.outside("zoom tidak bisa bagikan layar") == "zoom"
    assert coverage.outside("Zoom add-in missing from Outlook") is None  # names a covered product as well
    assert coverage.outside("Teams screen sharing is grey") is None
    assert coverage.outside("") is None


def test_a_product_the_knowledge_base_mentions_is_inert():
    coverage = Coverage.of(TITLES, (), {"zoom": 3}, frozenset({"zoom", "slack"}))
    assert coverage.uncovered == {"slack"}
    assert coverage.outside("zoom meeting has no sound") is None
    assert coverage.outside("slack huddle has no sound") == "slack"
