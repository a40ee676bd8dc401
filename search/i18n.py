"""UI strings of the agent pages in English and Indonesian, and the choice of language for a request."""
from __future__ import annotations

from typing import Callable

DEFAULT = "en"

STRINGS: dict[str, dict[str, str]] = {
    "en": {
        "app_name": "KB Search",
        "skip_to_content": "Skip to main content",
        "nav_label": "Main",
        "nav_search": "Search",
        "nav_suggest": "Ticket suggestions",
        "language_label": "Language",
        "search_title": "Search the knowledge base",
        "query_label": "Search articles",
        "query_placeholder": "Words, an error code or a question",
        "query_hint": "Press / to jump here, Enter to search.",
        "search_button": "Search",
        "filters_label": "Filters",
        "filter_product": "Product",
        "filter_language": "Language",
        "filter_audience": "Audience",
        "filter_any": "Any",
        "results_heading": "Results",
        "result_count_one": "1 article",
        "result_count": "{count} articles",
        "time_taken": "in {ms} ms",
        "for_query": "for “{query}”",
        "from_section": "From section",
        "open_section": "Open this section",
        "no_good_article": "No good article found",
        "no_good_article_help": "The articles below are the closest matches, but none looks like a clear answer.",
        "good_match": "Good match found",
        "confidence": "Confidence {percent}%",
        "empty_help_title": "How to search",
        "empty_help_1": "Type a few words from the ticket, such as “outlook password prompt”.",
        "empty_help_2": "Paste an error code as it appears, such as 0x8004010F or 5.7.124.",
        "empty_help_3": "Use the filters to keep to one product, language or audience.",
        "empty_help_4": "To search with a whole ticket, use Ticket suggestions.",
        "no_results_title": "No articles found",
        "no_results_try": "Try next:",
        "no_results_fewer": "Use fewer or more general words.",
        "no_results_filters": "Remove the filters.",
        "no_results_code": "Search for the error code alone, such as 0x8004010F.",
        "remove_filters": "Search again without filters",
        "suggest_title": "Suggestions for a ticket",
        "suggest_intro": "Paste the ticket's subject and text: greetings, signatures and quoted replies are ignored.",
        "subject_label": "Subject",
        "body_label": "Ticket text",
        "suggest_button": "Suggest answers",
        "answers_heading": "Answers",
        "suggested_articles": "Suggested articles",
        "matched_sections": "Matched sections",
        "no_answers": "No answers found for this ticket.",
        "open_article": "Open article",
        "product": "Product",
        "language": "Language",
        "audience": "Audience",
        "owner": "Owner",
        "last_reviewed": "Last reviewed",
        "related_articles": "Related articles",
        "tags": "Tags",
        "unknown": "unknown",
        "article_details": "Article details",
        "back_to_search": "Back to search",
        "copy": "Copy",
        "copy_section": "Copy section “{heading}” with a link",
        "copied": "Copied",
        "copy_failed": "Copy failed: select the text and copy it by hand",
        "helpful_question": "Was this helpful?",
        "yes": "Yes",
        "no": "No",
        "feedback_thanks": "Thank you for your feedback.",
        "feedback_failed": "Your feedback could not be recorded.",
        "error_title": "Something went wrong",
        "error_400": "The request could not be understood",
        "error_404": "Not found",
        "error_503": "The search service is not ready",
        "error_500": "Something went wrong",
        "error_help": "Go back to the search page and try again.",
        "error_not_ready": "The knowledge base is not ready yet; try again in a minute.",
        "error_server": "The service could not answer this request; your administrator can find the details in the service log.",
        "health_title": "Content health",
        "health_intro": "Problems in the articles for writers to fix, as `kb check` reports them.",
        "health_computing": "The report is being computed; this takes about a minute for a few thousand articles. "
                            "Reload the page shortly.",
        "health_updating": "The content or index changed: an updated report is being computed. This one is older.",
        "health_summary": "{articles} articles checked on {today}: {errors} errors, {warnings} warnings.",
        "health_index": "Index version {version}",
        "health_kind": "Check",
        "health_count": "Findings",
        "health_counts_label": "Findings per check",
        "health_none": "No problems found.",
        "health_more": "{count} more: see the JSON report.",
        "health_notes": "Notes",
        "health_timings": "Time per check (seconds)",
        "health_json": "This report as JSON",
        "kind_front_matter": "Front matter",
        "kind_missing_include": "Missing include",
        "kind_broken_link": "Broken link",
        "kind_link_case": "Link with the wrong letter case",
        "kind_broken_anchor": "Link to a missing heading",
        "kind_empty_section": "Empty section",
        "kind_duplicate_title": "Duplicate title",
        "kind_near_duplicate": "Near-duplicate articles",
        "kind_stale": "Not reviewed recently",
        "kind_not_reviewed": "Never reviewed",
        "kind_old_draft": "Old draft",
        "kind_never_returned": "Never returned by a search",
        "health_related": "with",
        "widget_title": "Knowledge base",
        "widget_waiting": "Waiting for the ticket…",
        "widget_searching": "Looking for articles…",
        "widget_count_one": "1 suggestion",
        "widget_count": "{count} suggestions",
        "widget_new_tab": "(opens in a new tab)",
        "widget_actions": "Actions",
        "widget_insert": "Insert into reply",
        "widget_inserted": "Inserted into the reply",
        "widget_copied_for_reply": "Copied: paste it into your reply",
        "widget_copy_link": "Copy link",
        "widget_link_copied": "Link copied",
        "widget_link": "Link to ticket",
        "widget_linked": "Linked to this ticket",
        "widget_error": "Suggestions could not be loaded.",
        "widget_error_auth": "The service needs an API key: set one in the helpdesk app's settings.",
        "widget_needs_js": "This widget needs JavaScript.",
    },
    "id": {
        "app_name": "KB Search",
        "skip_to_content": "Langsung ke konten utama",
        "nav_label": "Utama",
        "nav_search": "Cari",
        "nav_suggest": "Saran untuk tiket",
        "language_label": "Bahasa",
        "search_title": "Cari di basis pengetahuan",
        "query_label": "Cari artikel",
        "query_placeholder": "Kata kunci, kode galat, atau pertanyaan",
        "query_hint": "Tekan / untuk ke sini, Enter untuk mencari.",
        "search_button": "Cari",
        "filters_label": "Filter",
        "filter_product": "Produk",
        "filter_language": "Bahasa",
        "filter_audience": "Audiens",
        "filter_any": "Semua",
        "results_heading": "Hasil",
        "result_count_one": "1 artikel",
        "result_count": "{count} artikel",
        "time_taken": "dalam {ms} md",
        "for_query": "untuk “{query}”",
        "from_section": "Dari bagian",
        "open_section": "Buka bagian ini",
        "no_good_article": "Tidak ada artikel yang cocok",
        "no_good_article_help": "Artikel di bawah ini paling mendekati, tetapi tidak ada yang tampak sebagai jawaban yang jelas.",
        "good_match": "Ditemukan artikel yang cocok",
        "confidence": "Keyakinan {percent}%",
        "empty_help_title": "Cara mencari",
        "empty_help_1": "Ketik beberapa kata dari tiket, misalnya “outlook minta kata sandi”.",
        "empty_help_2": "Tempel kode galat apa adanya, misalnya 0x8004010F atau 5.7.124.",
        "empty_help_3": "Gunakan filter untuk membatasi produk, bahasa, atau audiens.",
        "empty_help_4": "Untuk mencari dengan seluruh isi tiket, gunakan Saran untuk tiket.",
        "no_results_title": "Tidak ada artikel yang ditemukan",
        "no_results_try": "Coba langkah berikut:",
        "no_results_fewer": "Gunakan lebih sedikit kata atau kata yang lebih umum.",
        "no_results_filters": "Hapus filter.",
        "no_results_code": "Cari kode galatnya saja, misalnya 0x8004010F.",
        "remove_filters": "Cari lagi tanpa filter",
        "suggest_title": "Saran untuk tiket",
        "suggest_intro": "Tempel subjek dan isi tiket: salam, tanda tangan, dan kutipan balasan diabaikan.",
        "subject_label": "Subjek",
        "body_label": "Isi tiket",
        "suggest_button": "Sarankan jawaban",
        "answers_heading": "Jawaban",
        "suggested_articles": "Artikel yang disarankan",
        "matched_sections": "Bagian yang cocok",
        "no_answers": "Tidak ada jawaban untuk tiket ini.",
        "open_article": "Buka artikel",
        "product": "Produk",
        "language": "Bahasa",
        "audience": "Audiens",
        "owner": "Pemilik",
        "last_reviewed": "Terakhir ditinjau",
        "related_articles": "Artikel terkait",
        "tags": "Tag",
        "unknown": "tidak diketahui",
        "article_details": "Detail artikel",
        "back_to_search": "Kembali ke pencarian",
        "copy": "Salin",
        "copy_section": "Salin bagian “{heading}” beserta tautannya",
        "copied": "Tersalin",
        "copy_failed": "Gagal menyalin: pilih teksnya dan salin secara manual",
        "helpful_question": "Apakah ini membantu?",
        "yes": "Ya",
        "no": "Tidak",
        "feedback_thanks": "Terima kasih atas masukan Anda.",
        "feedback_failed": "Masukan Anda tidak dapat disimpan.",
        "error_title": "Terjadi kesalahan",
        "error_400": "Permintaan tidak dapat dipahami",
        "error_404": "Tidak ditemukan",
        "error_503": "Layanan pencarian belum siap",
        "error_500": "Terjadi kesalahan",
        "error_help": "Kembali ke halaman pencarian dan coba lagi.",
        "error_not_ready": "Basis pengetahuan belum siap; coba lagi dalam satu menit.",
        "error_server": "Layanan tidak dapat menjawab permintaan ini; administrator Anda dapat melihat rinciannya di log layanan.",
        "health_title": "Kesehatan konten",
        "health_intro": "Masalah pada artikel yang perlu diperbaiki penulis, seperti yang dilaporkan `kb check`.",
        "health_computing": "Laporan sedang dihitung; untuk beberapa ribu artikel butuh sekitar satu menit. "
                            "Muat ulang halaman sebentar lagi.",
        "health_updating": "Konten atau indeks berubah: laporan baru sedang dihitung. Laporan ini lebih lama.",
        "health_summary": "{articles} artikel diperiksa pada {today}: {errors} galat, {warnings} peringatan.",
        "health_index": "Versi indeks {version}",
        "health_kind": "Pemeriksaan",
        "health_count": "Temuan",
        "health_counts_label": "Temuan per pemeriksaan",
        "health_none": "Tidak ada masalah.",
        "health_more": "{count} lainnya: lihat laporan JSON.",
        "health_notes": "Catatan",
        "health_timings": "Waktu per pemeriksaan (detik)",
        "health_json": "Laporan ini sebagai JSON",
        "kind_front_matter": "Metadata artikel (front matter)",
        "kind_missing_include": "Sisipan (include) tidak ditemukan",
        "kind_broken_link": "Tautan rusak",
        "kind_link_case": "Huruf besar/kecil tautan tidak cocok",
        "kind_broken_anchor": "Tautan ke judul yang tidak ada",
        "kind_empty_section": "Bagian kosong",
        "kind_duplicate_title": "Judul ganda",
        "kind_near_duplicate": "Artikel yang hampir sama",
        "kind_stale": "Lama tidak ditinjau",
        "kind_not_reviewed": "Belum pernah ditinjau",
        "kind_old_draft": "Draf lama",
        "kind_never_returned": "Tidak pernah muncul di hasil pencarian",
        "health_related": "dengan",
        "widget_title": "Basis pengetahuan",
        "widget_waiting": "Menunggu tiket…",
        "widget_searching": "Mencari artikel…",
        "widget_count_one": "1 saran",
        "widget_count": "{count} saran",
        "widget_new_tab": "(terbuka di tab baru)",
        "widget_actions": "Tindakan",
        "widget_insert": "Sisipkan ke balasan",
        "widget_inserted": "Disisipkan ke balasan",
        "widget_copied_for_reply": "Tersalin: tempelkan ke balasan Anda",
        "widget_copy_link": "Salin tautan",
        "widget_link_copied": "Tautan tersalin",
        "widget_link": "Tautkan ke tiket",
        "widget_linked": "Tertaut ke tiket ini",
        "widget_error": "Saran tidak dapat dimuat.",
        "widget_error_auth": "Layanan memerlukan kunci API: atur di pengaturan aplikasi helpdesk.",
        "widget_needs_js": "Widget ini memerlukan JavaScript.",
    },
}

LANGUAGES = tuple(STRINGS)
LANGUAGE_NAMES = {"en": "English", "id": "Bahasa Indonesia"}
ALIASES = {"in": "id"}  # the old ISO 639 code of Indonesian, still sent by some browsers


def translate(lang: str) -> Callable[..., str]:
    """t(key, **values) for `lang`: the string of that language (English if missing), formatted with values."""
    strings = STRINGS.get(lang, STRINGS[DEFAULT])

    def t(key: str, **values) -> str:
        text = strings.get(key) or STRINGS[DEFAULT][key]
        return text.format(**values) if values else text

    return t


def normalise(code: str | None) -> str | None:
    """'id', 'ID', 'id-ID', 'in' -> 'id'; None for a language without UI strings."""
    if not code:
        return None
    primary = code.strip().lower().replace("_", "-").split("-")[0]
    primary = ALIASES.get(primary, primary)
    return primary if primary in STRINGS else None


def from_accept_language(header: str | None) -> str | None:
    """The supported language the browser prefers most (by q weight, then order), or None."""
    choices = []
    for position, part in enumerate((header or "").split(",")):
        tag, _, params = part.strip().partition(";")
        weight = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    weight = float(value)
                except ValueError:
                    weight = 0.0
        if weight > 0 and normalise(tag):
            choices.append((-weight, position, normalise(tag)))
    return min(choices)[2] if choices else None


def choose_language(param: str | None, cookie: str | None, accept_language: str | None) -> str:
    """?lang=, else the lang cookie, else Accept-Language, else English."""
    return normalise(param) or normalise(cookie) or from_accept_language(accept_language) or DEFAULT
