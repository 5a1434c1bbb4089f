"""What the pages show and do: review actions, bulk approve, certificate, lookup, keys, audit."""

from __future__ import annotations

import json
import logging
import re

import pytest

from sqlalchemy import text

from app.db import get_engine, session_scope
from tests.dashboard.helpers import complete_without_data, csrf_of, new_key, new_request, sign_in
from tests.objects import request_body


def _api(client, plaintext, path):
    return client.get(path, headers={"Authorization": f"Bearer {plaintext}"}).json()


def test_every_review_action_goes_through_a_confirmation(client):
    plaintext = new_key()
    request_id = new_request(client, plaintext)
    sign_in(client, plaintext)
    page = client.get(f"/admin/requests/{request_id}").text
    for action in ("approve", "deny", "hold", "cancel", "extend"):
        assert f'href="/admin/requests/{request_id}/{action}"' in page
    assert f'/{request_id}/release"' not in page  # not on hold: release is not offered
    confirm = client.get(f"/admin/requests/{request_id}/hold")
    assert confirm.status_code == 200 and 'name="reason"' in confirm.text
    token = csrf_of(client, f"/admin/requests/{request_id}/hold")
    missing = client.post(f"/admin/requests/{request_id}/hold", data={"csrf_token": token})
    assert missing.status_code == 422
    assert client.post(f"/admin/requests/{request_id}/hold", data={"csrf_token": token, "reason": "identity check"}).status_code == 200
    assert _api(client, plaintext, f"/v1/erasure-requests/{request_id}")["status"] == "on_hold"
    client.post(f"/admin/requests/{request_id}/release", data={"csrf_token": token})
    extended = client.post(f"/admin/requests/{request_id}/extend", data={"csrf_token": token, "reason": "complex", "days": "30"})
    assert extended.status_code == 200 and "30 days" in extended.text
    again = client.post(f"/admin/requests/{request_id}/extend", data={"csrf_token": token, "reason": "again", "days": "5"})
    assert again.status_code == 409  # at most once, as the API says
    client.post(f"/admin/requests/{request_id}/deny", data={"csrf_token": token, "reason": "not our customer"})
    body = _api(client, plaintext, f"/v1/erasure-requests/{request_id}")
    assert body["status"] == "denied" and body["extended_days"] == 30
    audit = client.get(f"/admin/requests/{request_id}").text
    assert "Chain verified" in audit and "request.denied" in audit and "not our customer" in audit


def test_a_key_without_review_scope_sees_no_actions(client):
    writer = new_key()
    request_id = new_request(client, writer)
    sign_in(client, new_key("requests:read"))
    assert f"/{request_id}/approve" not in client.get(f"/admin/requests/{request_id}").text
    token = csrf_of(client)
    assert client.post(f"/admin/requests/{request_id}/approve", data={"csrf_token": token}).status_code == 403


def test_bulk_approve_confirms_then_approves_each(client):
    plaintext = new_key()
    ids = [new_request(client, plaintext) for _ in range(3)]
    sign_in(client, plaintext)
    token = csrf_of(client, "/admin/requests")
    step = client.post("/admin/requests/approve", data={"csrf_token": token, "ids": ids[:2]})
    assert step.status_code == 200 and "Confirm approval" in step.text
    # Nobody verified these requesters: the confirmation asks for the override's reason.
    assert step.text.count("requester not verified") == 2 and 'name="override_reason"' in step.text
    assert _api(client, plaintext, f"/v1/erasure-requests/{ids[0]}")["status"] == "received"
    bare = client.post("/admin/requests/approve", data={"csrf_token": token, "ids": ids[:2], "confirmed": "yes"})
    assert "Not approved" in bare.text and "override_reason" in bare.text
    assert _api(client, plaintext, f"/v1/erasure-requests/{ids[0]}")["status"] == "received"
    done = client.post("/admin/requests/approve", data={"csrf_token": token, "ids": ids[:2], "confirmed": "yes",
                                                        "override_reason": "Checked by phone."})
    assert "Approved 2 requests" in done.text
    events = _api(client, plaintext, f"/v1/erasure-requests/{ids[0]}/audit")["events"]
    assert events[-1]["data"]["override_reason"] == "Checked by phone."
    assert [_api(client, plaintext, f"/v1/erasure-requests/{i}")["status"] for i in ids] == ["approved", "approved", "received"]
    repeat = client.post("/admin/requests/approve", data={"csrf_token": token, "ids": ids[:1], "confirmed": "yes"})
    assert "Not approved" in repeat.text


def test_filters_search_and_cursor_pages(client):
    plaintext = new_key()
    for n in range(55):
        new_request(client, plaintext, external_id=f"bulk-{n:03d}", jurisdiction="ccpa" if n % 5 == 0 else "gdpr")
    sign_in(client, plaintext)
    first = client.get("/admin/requests").text
    assert first.count('href="/admin/requests/') >= 50
    next_link = re.search(r'href="(/admin/requests\?[^"]*cursor=[^"]+)"', first).group(1).replace("&amp;", "&")
    second = client.get(next_link).text
    assert ">bulk-000</a>" in second and ">bulk-054</a>" in first
    ccpa = client.get("/admin/requests?jurisdiction=ccpa").text
    assert ccpa.count(">bulk-") == 11
    found = client.get("/admin/requests?q=bulk-007").text
    assert found.count(">bulk-") == 1
    odd = client.get("/admin/requests?status=nonsense&received_from=yesterday")
    assert odd.status_code == 200 and "Unknown status" in odd.text


def test_certificate_is_shown_verified_and_downloads(client):
    from app.certificates.signing import verify_document

    plaintext = new_key()
    request_id = new_request(client, plaintext)
    complete_without_data(request_id)
    sign_in(client, plaintext)
    page = client.get(f"/admin/requests/{request_id}").text
    assert "Signature verified" in page and "Download certificate" in page and "no data found" in page
    download = client.get(f"/admin/requests/{request_id}/certificate.json")
    assert download.status_code == 200 and "attachment" in download.headers["content-disposition"]
    assert download.content == client.get(f"/v1/erasure-requests/{request_id}/certificate",
                                           headers={"Authorization": f"Bearer {plaintext}"}).content
    assert verify_document(json.loads(download.content)) == (True, "valid")


def test_subject_lookup_never_echoes_stores_or_logs_the_identifier(client, caplog):
    plaintext = new_key()
    secret_email = "lookup.person.4711@example.org"
    new_request(client, plaintext, email=secret_email)
    sign_in(client, plaintext)
    token = csrf_of(client, "/admin/subjects")
    caplog.set_level(logging.DEBUG)
    response = client.post("/admin/subjects", data={"csrf_token": token, "kind": "email", "identifier": secret_email})
    assert response.status_code == 200 and "No dataset holds this subject" in response.text
    bad = client.post("/admin/subjects", data={"csrf_token": token, "kind": "email", "identifier": "not an email " + secret_email})
    assert bad.status_code == 422
    for text_seen in (response.text, bad.text, caplog.text):
        assert "lookup.person" not in text_seen
    with get_engine().connect() as connection:
        for table in ("dashboard_sessions", "dashboard_login_failures", "audit_events", "erasure_requests"):
            rows = connection.execute(text(f"SELECT * FROM {table}")).all()
            assert "lookup.person" not in repr(rows)


def test_admin_creates_a_key_shown_once_and_audit_verification_runs(client):
    sign_in(client, new_key("admin", client="ops"))
    token = csrf_of(client, "/admin/keys")
    created = client.post("/admin/keys", data={"csrf_token": token, "name": "portal", "client": "beta", "scopes": ["requests:write"]})
    assert created.status_code == 201
    plaintext = re.search(r'value="(obl_[^"]+)"', created.text).group(1)
    assert plaintext not in client.get("/admin/keys").text
    assert client.post("/v1/erasure-requests", headers={"Authorization": f"Bearer {plaintext}"},
                       json=request_body(identifiers={"email": "k@example.org"})).status_code == 201
    started = client.post("/admin/audit/verify", data={"csrf_token": token}, follow_redirects=False)
    assert started.status_code == 303
    run_page = started.headers["location"]
    assert 'data-status="running"' in client.get(run_page).text
    _run_queued_jobs()  # the run is an `audit_verify` job: what a worker does with it
    page = client.get(run_page).text
    assert 'data-status="completed"' in page
    # The request's chain and, since keys are audited, one chain per key created here.
    assert "Every chain intact" in page and re.search(r"\b[2-9] chains", page)
    assert "chain intact" in client.get("/admin").text


def _run_queued_jobs() -> None:
    from sqlalchemy import select

    from app.jobs.models import Job
    from workers import jobs

    with session_scope() as session:
        queued = list(session.scalars(select(Job.id).where(Job.status == "queued")))
    assert queued
    for job_id in queued:
        assert jobs.execute(str(job_id)) == "completed"


def test_non_admin_cannot_open_admin_pages(client):
    sign_in(client, new_key())
    for path in ("/admin/keys", "/admin/audit"):
        assert client.get(path).status_code == 403


def test_models_and_datasets_pages_render_empty(client):
    sign_in(client, new_key("models:read"))
    assert "No models yet" in client.get("/admin/models").text
    assert "No datasets yet" in client.get("/admin/datasets").text
    assert client.get("/admin/models/missing").status_code == 404


def test_verification_table_shows_every_figure_with_its_reference():
    from app.dashboard.charts import metric_series, verification_figures

    figures = {"before": {"forget": {"accuracy": 1.0, "n": 4}, "holdout": {"accuracy": 0.9}, "mia_auc": 0.8, "new": 2.0},
               "after": {"forget": {"accuracy": 0.88, "n": 4}, "holdout": {"accuracy": 0.9}, "mia_auc": 0.5, "new": 3.0}}
    rows = {row.label: row for row in verification_figures(figures)}
    assert set(rows) == {"forget accuracy", "holdout accuracy", "mia_auc", "new"}
    # The line is the policy's tolerance: AUC 0.5 + OBLIVIATE_TOLERANCE_MIA_AUC (default 0.10).
    assert rows["mia_auc"].reference == 0.6 and rows["forget accuracy"].reference == 0.9
    assert (rows["new"].before, rows["new"].after, rows["new"].reference) == (2.0, 3.0, None)
    series = metric_series([(1, {"holdout": {"accuracy": 0.8}}), (2, {"verification": figures})])
    by_name = {s.name: s for s in series}
    assert by_name["holdout accuracy"].values == [(1, 0.8), (2, 0.9)]
    assert by_name["mia_auc"].values == [(2, 0.5)] and by_name["mia_auc"].coords == [(50.0, 20.0)]  # a dot
    assert by_name["holdout accuracy"].coords == [(0.0, 38.0), (100.0, 2.0)]


def test_verdicts_table_shows_each_check_with_its_interval():
    from app.dashboard.web import templates

    verdicts = {"verdict": "inconclusive", "alpha": 0.05, "records": 12, "reference": "references",
                "epsilon_lower_bound": 0.0, "escalates": True, "checks": [
                    {"name": "mia_auc", "attack": "loss_threshold", "estimate": 0.021, "interval": [-0.08, 0.12],
                     "tolerance": 0.1, "two_sided": True, "verdict": "inconclusive", "reason": "too little evidence"},
                    {"name": "per_record_audit", "attack": "offline_lira", "estimate": None, "interval": None,
                     "tolerance": 0.15, "two_sided": False, "verdict": "inconclusive", "reason": "too few references"}]}
    html = templates.get_template("_verdicts.html").render(verdicts=verdicts)
    assert "Verdict: <strong class=\"badge bad\">inconclusive</strong>" in html and "escalated" in html
    assert "[-0.080, +0.120]" in html and "±0.100" in html and "≤ 0.150" in html
    assert 'title="too few references"' in html and "ε ≥ 0.00" in html


def test_text_datasets_and_language_models_render(client):
    from tests.objects import create_text_dataset, import_language_model

    plaintext = new_key("models:read,models:write")
    headers = {"Authorization": f"Bearer {plaintext}"}
    dataset = create_text_dataset(client, headers, name="support-notes")
    import_language_model(client, headers, dataset["id"], name="notes-lm")
    sign_in(client, plaintext)
    listing = client.get("/admin/datasets")
    assert listing.status_code == 200 and "support-notes" in listing.text
    page = client.get(f"/admin/datasets/{dataset['dataset_id']}")
    assert page.status_code == 200 and "Text column" in page.text and "Label" not in page.text
    models = client.get("/admin/models")
    assert models.status_code == 200 and "notes-lm" in models.text and "causal_lm" in models.text
    assert client.get("/admin/models/notes-lm").status_code == 200


def test_language_model_figures_are_charted_against_their_references():
    from app.dashboard.charts import verification_figures

    text = {"loss_auc": 0.51, "min_k_plus_plus_auc": 0.48, "perplexity": {"forget": 9.5, "holdout": 9.1},
            "extraction": {"forget": {"records": 8, "extracted": 0, "fraction": 0.0},
                           "holdout": {"records": 20, "extracted": 1, "fraction": 0.05}}}
    side = {"forget": {"accuracy": 0.4, "loss": 2.1, "n": 8}, "mia_auc": 0.51, "text": text}
    bars = {row.label: row for row in verification_figures({"before": side, "after": side})}
    assert bars["text min_k_plus_plus_auc"].reference_label == "tolerance"
    assert bars["text extraction forget fraction"].reference == 0.05
    assert "text perplexity forget" in bars and "text extraction forget records" in bars


def test_verdicts_table_names_the_interval_level_and_the_utility_check_that_did_not_block():
    from app.dashboard.web import templates

    drop = {"name": "holdout_drop", "attack": None, "estimate": 0.02, "interval": [0.005, 0.035], "tolerance": 0.03,
            "two_sided": False, "verdict": "inconclusive", "reason": "too little evidence", "confidence": 0.9,
            "utility": True}
    gap = {"name": "forget_accuracy_gap", "attack": None, "estimate": 0.01, "interval": [-0.02, 0.04],
           "tolerance": 0.075, "two_sided": True, "verdict": "pass", "reason": "within", "confidence": 0.9,
           "utility": False}
    verdicts = {"verdict": "pass", "alpha": 0.05, "records": 400, "reference": "references",
                "epsilon_lower_bound": 0.0, "escalates": False, "checks": [gap, drop],
                "notes": ["inconclusive: holdout accuracy drop +0.020"]}
    html = templates.get_template("_verdicts.html").render(verdicts=verdicts)
    assert "(90% intervals)" in html and "holdout_drop <small>(utility)</small>" in html
    assert "forget_accuracy_gap <small>" not in html
    assert "Recorded without blocking: inconclusive: holdout accuracy drop +0.020" in html
    # A block written before the notes existed renders without them.
    older = templates.get_template("_verdicts.html").render(verdicts={**verdicts, "notes": []})
    assert "Recorded without blocking" not in older


def test_model_page_shows_its_rehearsal_candidates_and_what_jobs_start_with(client):
    from tests.dashboard.helpers import seed_rehearsal, seed_unlearned

    name = seed_unlearned(new_request(client, new_key(), external_id="dsr-rehearsed"))
    sign_in(client, new_key("models:read"))
    assert "Unlearning rehearsal" not in client.get(f"/admin/models/{name}").text  # none yet
    seed_rehearsal(name)
    page = client.get(f"/admin/models/{name}").text
    assert "Unlearning rehearsal" in page and "25 random subjects" in page and "(103 records)" in page
    assert "Jobs start with <strong>neggrad_plus</strong> <code>{\"learning_rate\": 0.003}</code>" in page
    rows = re.findall(r"<tr>\s*<th scope=\"row\">(\w+)</th>(.*?)</tr>", page, re.S)
    by_method = {method: cells for method, cells in rows if method in ("neggrad_plus", "finetune", "scrub", "salun")}
    assert "passed</span>" in by_method["neggrad_plus"] and "0.012" in by_method["neggrad_plus"]
    assert "2 of 3" in by_method["neggrad_plus"] and "3 draws of 25 random subjects" in page
    assert "not run" not in by_method["neggrad_plus"] and "untestable" not in by_method["neggrad_plus"]
    assert re.search(r"0 of 3 \(<span title=\"not run: the candidate had already failed too many draws to pass[^\"]*\">"
                     r"1 not run</span>\)</td>", by_method["scrub"])
    # A draw whose no-op control passed the original is counted apart from one skipped.
    assert re.search(r"0 of 3 \(<span title=\"not run: the checks cannot see these draws' subjects[^\"]*\">"
                     r"1 untestable</span>, <span title=\"not run: [^\"]*\">1 not run</span>\)</td>", by_method["salun"])
    assert "—" in by_method["finetune"].split("0.10")[1]  # written before draws: no share of draws shown
    assert 'title="fail: forget records still recognisable"' in by_method["finetune"] and "—" in by_method["finetune"]


def test_model_page_shows_a_rehearsal_that_ran_no_candidate(client):
    from tests.dashboard.helpers import NOTHING_RUN, seed_rehearsal, seed_unlearned

    name = seed_unlearned(new_request(client, new_key(), external_id="dsr-untestable"))
    sign_in(client, new_key("models:read"))
    seed_rehearsal(name, results=NOTHING_RUN)
    page = client.get(f"/admin/models/{name}").text
    (cells,) = [cells for method, cells in re.findall(r"<tr>\s*<th scope=\"row\">(\w+)</th>(.*?)</tr>", page, re.S)
                if method == "finetune"]
    # No cost where the candidate ran on no draw; its draws counted by why they were not run.
    assert re.search(r"<td>—</td>\s*<td>0 of 3 \(<span[^>]*>2 untestable</span>, <span[^>]*>1 not run</span>\)</td>",
                     cells)
    assert "No candidate passed" in page and ">inconclusive</td>" in cells


def _forest_checks():
    return [
        {"name": "forget_accuracy_gap", "attack": None, "estimate": -0.01, "interval": [-0.21, 0.19], "tolerance": 0.15,
         "two_sided": True, "verdict": "inconclusive", "reason": "too little evidence", "confidence": 0.9},
        {"name": "mia_auc", "attack": "loss_threshold", "estimate": 0.02, "interval": [-0.03, 0.07], "tolerance": 0.1,
         "two_sided": True, "verdict": "pass", "reason": "within", "confidence": 0.9},
        {"name": "per_record_audit", "attack": "offline_lira", "estimate": None, "interval": None, "tolerance": 0.15,
         "two_sided": False, "verdict": "inconclusive", "reason": "too few references", "confidence": 0.9},
        {"name": "holdout_drop", "attack": None, "estimate": 0.0, "interval": [-0.02, 0.035], "tolerance": 0.03,
         "two_sided": False, "verdict": "inconclusive", "reason": "too little evidence", "confidence": 0.9,
         "utility": True},
    ]


def test_forest_plot_draws_each_check_as_an_interval_against_its_tolerance_band():
    from xml.etree import ElementTree

    from app.dashboard.charts import forest_plot

    plot = forest_plot({"verdict": "inconclusive", "checks": _forest_checks()}, "Checks of job 1234")
    svg = ElementTree.fromstring(plot.svg)  # well-formed SVG
    ns = {"s": "http://www.w3.org/2000/svg"}
    assert svg.get("role") == "img" and svg.find("s:title", ns).text == "Checks of job 1234"
    rows = svg.findall("s:g[@class='check']", ns)
    assert [r.get("data-check") for r in rows] == ["forget_accuracy_gap", "mia_auc", "per_record_audit", "holdout_drop"]
    assert [r.get("data-verdict") for r in rows] == ["inconclusive", "pass", "inconclusive", "inconclusive"]
    # The axis: symmetric about 0, ticks labelled with their values, and named with its unit.
    ticks = [t.text for t in svg.findall("s:text[@class='tick']", ns)]
    assert plot.limit >= 0.21 and ticks[0] == f"{-plot.limit:+.2f}" and ticks[-1] == f"{plot.limit:+.2f}" and "+0.00" in ticks
    assert svg.find("s:line[@class='axis']", ns) is not None and "0.10 = 10 points" in plot.svg

    def x(value):  # the plot's own mapping of a value to its position
        from app.dashboard.charts import LEFT, PLOT
        return round(LEFT + (value + plot.limit) / (2 * plot.limit) * PLOT, 2)

    bands = {r.get("data-check"): r.find("s:rect[@class='band']", ns) for r in rows}
    # A two-sided band spans ±tolerance; a one-sided one runs from the axis' start to the tolerance.
    mia = bands["mia_auc"]
    assert float(mia.get("x")) == x(-0.1) and abs(float(mia.get("x")) + float(mia.get("width")) - x(0.1)) < 0.02
    drop = bands["holdout_drop"]
    assert float(drop.get("x")) == x(-plot.limit) and abs(float(drop.get("x")) + float(drop.get("width")) - x(0.03)) < 0.02
    interval = rows[1].find("s:line[@class='interval']", ns)
    assert (float(interval.get("x1")), float(interval.get("x2"))) == (x(-0.03), x(0.07))
    # Each row states its label, unit, verdict and figures in words; a check without an interval says so.
    text = " ".join("".join(r.itertext()) for r in rows)
    assert "Loss-attack AUC − 0.5" in text and "AUC · pass" in text and "+0.020 [-0.030, +0.070] · tolerance ±0.100" in text
    assert "Holdout accuracy drop (utility)" in text and "tolerance ≤ 0.030" in text
    assert rows[2].find("s:line[@class='interval']", ns) is None and "not measurable" in "".join(rows[2].itertext())
    assert forest_plot({"checks": []}, "none") is None and forest_plot(None, "none") is None


def _text_box(element, font_size: float) -> tuple[float, float, float, float]:
    """(x0, x1, y0, y1) that an SVG text element covers at most: every glyph of a sans-serif
    face is at most 0.62 em wide, and the line runs from an em above its baseline to a quarter
    em below it."""
    width = len("".join(element.itertext())) * 0.62 * font_size
    x, y = float(element.get("x")), float(element.get("y"))
    start = {"middle": x - width / 2, "end": x - width}.get(element.get("text-anchor"), x)
    return start, start + width, y - font_size, y + 0.25 * font_size


def _overlap(a, b) -> bool:
    return a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]


@pytest.mark.parametrize("extent", [0.02, 0.26, 0.3, 0.7, 1.0])
def test_forest_plot_legend_never_meets_a_tick_label(extent):
    from xml.etree import ElementTree

    from app.dashboard.charts import forest_plot

    checks = [*_forest_checks(), {"name": "extraction", "estimate": extent / 2, "interval": [0.0, extent],
                                  "tolerance": 0.01, "two_sided": False, "verdict": "fail", "confidence": 0.9}]
    plot = forest_plot({"checks": checks}, "scale")
    svg = ElementTree.fromstring(plot.svg)
    ns = {"s": "http://www.w3.org/2000/svg"}
    legend = svg.find("s:g[@class='legend']", ns)
    rect, label = legend.find("s:rect", ns), legend.find("s:text", ns)
    rx, ry = float(rect.get("x")), float(rect.get("y"))
    box = _text_box(label, float(label.get("font-size")))
    legend_box = (min(rx, box[0]), max(rx + float(rect.get("width")), box[1]),
                  min(ry, box[2]), max(ry + float(rect.get("height")), box[3]))
    assert "tolerance band" in "".join(label.itertext())
    ticks = svg.findall("s:text[@class='tick']", ns)
    assert ticks[-1].text == f"{plot.limit:+.2f}"
    caption = svg.find("s:text[@class='caption']", ns)
    for text in [*ticks, caption]:
        assert not _overlap(_text_box(text, float(text.get("font-size"))), legend_box), (text.text, legend_box)
    # The legend lies inside the drawing.
    height = float(svg.get("viewBox").split()[3])
    assert legend_box[3] <= height


@pytest.mark.parametrize("verdict", ["inconclusive", "fail"])
def test_an_exact_erasure_shows_its_sanity_check_without_a_red_badge_and_alarms_when_it_fails(client, verdict):
    from copy import deepcopy

    from app.unlearning.sanity import NOTICE
    from tests.dashboard.helpers import FIGURES, seed_unlearned

    figures = deepcopy(FIGURES)
    if verdict == "fail":  # the forget records stand out from unseen data: lineage or calibration is wrong
        figures["verdicts"]["verdict"] = "fail"
        figures["verdicts"]["checks"][1].update(estimate=0.05, interval=[0.035, 0.065], verdict="fail")
    plaintext = new_key()
    request_id = new_request(client, plaintext, external_id="dsr-sisa")
    seed_unlearned(request_id, figures=figures)
    sign_in(client, plaintext)
    page = client.get(f"/admin/requests/{request_id}").text
    section = page.split('id="verif-h"')[1].split('id="cert-h"')[0]
    assert 'data-status="completed"' in page and "(erased)" in page
    assert f'Sanity check: <strong class="badge">{verdict}</strong>' in section and "badge bad" not in section
    assert "a sanity check, not the proof of erasure" in section
    alarm = verdict == "fail"
    assert ('role="alert"' in section) is alarm and (NOTICE.split(".")[0] in section) is alarm
    # The forest plot replaces the bars: one row per check; the table keeps every figure.
    assert section.count('class="check"') == 2 and "<svg" in section and "Verification figures" in section
    # The alarm's gauge on /metrics, read from the jobs' results, for every exact method.
    from app.health.figures import EXACT_METHODS
    from app.unlearning.types import EXACT_METHODS as EXACT

    assert set(EXACT_METHODS) == EXACT
    scrape = client.get("/metrics").text
    assert f'obliviate_exact_sanity_check_failures{{method="sisa"}} {1.0 if alarm else 0.0}' in scrape
