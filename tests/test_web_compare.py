"""/compare (HTML, CSV, JSON) and /users/USER over HTTP: sorting, filters, hostile queries."""

from __future__ import annotations

import csv
import io
import re

import pytest
from web_helpers import DEPLOY, publish, web_for

from caffezoo.server.compare import BadQuery, parse_number

PYTHON_NET = DEPLOY.replace('type: "ReLU"', 'type: "Python" python_param { module: "m" layer: "L" }')
WIDE_NET = DEPLOY.replace("num_output: 8", "num_output: 64")


def names(html: str) -> list[str]:
    return re.findall(r'<td class="name"><a href="/models/[^"]+">([^<]*)</a>', html)


@pytest.fixture
def zoo(database_url, tmp_path):
    """The bundled models plus three small ones, on SQLite and on PostgreSQL."""
    with web_for(database_url, tmp_path) as w:
        publish(w.storage, "tina", "Tiny A", license="MIT", task="toy")
        publish(w.storage, "tina", "Wide B", license="MIT", task="toy", files={"deploy.prototxt": WIDE_NET})
        publish(
            w.storage, "pyet", "Python C", license="GPL", task="toy", files={"deploy.prototxt": PYTHON_NET}
        )
        publish(w.storage, "nell", "Netless D", files={"deploy.prototxt": "layer {"})
        yield w


def test_sort_by_any_column_both_ways(zoo):
    by_macs = names(zoo.get("/compare", params={"sort": "macs"}).text)
    assert by_macs[:2] == ["Tiny A", "Wide B"]
    assert by_macs[-2:] == ["Netless D", "Python C"]  # unknown MACs sort last (by name), either way
    desc = names(zoo.get("/compare", params={"sort": "macs", "order": "desc"}).text)
    assert desc[0] == "BAIR/BVLC GoogleNet Model" and desc[-2:] == ["Netless D", "Python C"]
    by_params = zoo.http.get("/compare.json", params={"sort": "params", "order": "desc"}).json()["models"]
    known = [m["params"] for m in by_params if m["params"] is not None]
    assert known == sorted(known, reverse=True) and by_params[-1]["params"] is None
    for column in ("name", "task", "dataset", "reported", "weights", "license", "convertible", "mirrored"):
        r = zoo.get("/compare", params={"sort": column})
        assert r.status_code == 200 and len(names(r.text)) == 9, column
    reported = zoo.http.get("/compare.json", params={"sort": "reported", "order": "desc"}).json()["models"]
    assert reported[0]["name"] == "BAIR/BVLC GoogleNet Model"  # top-1 68.7, the best reported


def test_filters(zoo):
    assert names(zoo.get("/compare", params={"task": "toy", "convertible": "1"}).text) == ["Tiny A", "Wide B"]
    assert names(zoo.get("/compare", params={"license": "GPL"}).text) == ["Python C"]
    small = names(zoo.get("/compare", params={"params_max": "10M"}).text)
    assert "BAIR/BVLC GoogleNet Model" in small and "BAIR/BVLC AlexNet Model" not in small
    assert "Netless D" not in small  # an unknown count is in no range
    mid = names(zoo.get("/compare", params={"macs_min": "1G", "macs_max": "1.6G"}).text)
    assert mid == ["BAIR/BVLC GoogleNet Model"]
    r = zoo.get("/compare", params={"task": "toy", "sort": "params", "order": "desc"})
    assert 'name="sort" value="params"' in r.text  # the filter form keeps the order
    assert "3 models match" in r.text


@pytest.mark.parametrize(
    "params, message",
    [
        ({"sort": "password"}, "sort: expected one of name, task"),
        ({"sort": "name; DROP TABLE zoo_entries"}, "sort: expected one of"),
        ({"order": "sideways"}, "order: expected asc or desc"),
        ({"params_max": "ten"}, "params_max: expected a number"),
        ({"macs_min": "1e999"}, "macs_min: expected a number"),
        ({"macs_min": "9" * 30}, "larger than any model"),
        ({"params_min": "-5"}, "params_min: expected a number"),
        ({"page": "x"}, "page: expected a whole number"),
        ({"ids": ",".join(f"m{i}" for i in range(2_000))}, "ids: at most 20 models"),
        ([("ids", f"m{i}") for i in range(500)], "ids: at most 20 models"),
        ({"ids": "../../etc/passwd"}, "is not a model id"),
    ],
)
def test_bad_queries_are_400_with_the_parameter_named(zoo, params, message):
    for path in ("/compare", "/compare.csv", "/compare.json"):
        r = zoo.get(path, params=params)
        assert r.status_code == 400, (path, r.text[:200])
        body = r.json()["message"] if path.endswith(".json") else r.text
        assert message in body.replace("&#39;", "'"), body[-300:]
    assert "Traceback" not in r.text


def test_pick_models_side_by_side(zoo):
    rows = zoo.http.get("/compare.json", params={"sort": "name"}).json()["models"]
    ids = {m["name"]: m["id"] for m in rows}
    chosen = [ids["Wide B"], ids["BAIR/BVLC AlexNet Model"], ids["Python C"]]
    # Ticked boxes send ids=A&ids=B&ids=C; a link sends ids=A,B,C: both work, in the order given.
    for params in ([("ids", i) for i in chosen], {"ids": ",".join(chosen)}):
        r = zoo.get("/compare", params=params)
        assert r.status_code == 200
        heads = re.findall(r'<th scope="col"><a href="/models/([^"]+)">', r.text)
        assert heads == chosen
    assert "60,965,224" in r.text and "top-1" in r.text and ">no<" in r.text  # Python C does not convert
    missing = zoo.get("/compare", params={"ids": "nosuchmodel"})
    assert missing.status_code == 200 and "None of those models is here" in missing.text
    data = zoo.http.get("/compare.json", params={"ids": ",".join(chosen)}).json()
    assert [m["id"] for m in data["models"]] == chosen


def test_csv_is_the_same_rows_and_cannot_run_in_a_spreadsheet(zoo):
    publish(zoo.storage, "eve", '=HYPERLINK("http://evil.example")', license="'@SUM(1)'")
    r = zoo.get("/compare.csv", params={"sort": "params", "order": "desc"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(r.text)))
    json_rows = zoo.http.get("/compare.json", params={"sort": "params", "order": "desc"}).json()["models"]
    assert [t["id"] for t in table] == [m["id"] for m in json_rows]
    alex = next(t for t in table if t["name"] == "BAIR/BVLC AlexNet Model")
    assert alex["params"] == "60965224" and alex["convertible"] == "yes" and "top-1 57.1" in alex["results"]
    evil = next(t for t in table if "HYPERLINK" in t["name"])
    assert evil["name"].startswith("'=") and evil["license"].startswith("'@")


def test_pages_of_the_table(zoo):
    for i in range(55):
        publish(zoo.storage, "paula", f"Paged {i:02d}", task="paged")
    first = zoo.get("/compare", params={"task": "paged"}).text
    assert len(names(first)) == 50 and "page 1 of 2" in first and 'rel="next"' in first
    second = zoo.get("/compare", params={"task": "paged", "page": "2"}).text
    assert names(second) == [f"Paged {i}" for i in range(50, 55)]
    big = zoo.http.get("/compare.json", params={"task": "paged", "per_page": "100000"}).json()
    assert big["per_page"] == 500 and len(big["models"]) == 55
    assert len(names(zoo.get("/compare", params={"task": "paged", "per_page": "500"}).text)) == 55


def test_the_page_has_no_script_and_the_csp(zoo):
    r = zoo.get("/compare")
    assert "<script" not in r.text.lower() and "default-src 'none'" in r.headers["content-security-policy"]


def test_user_pages(zoo):
    publish(zoo.storage, "tina", "Secret E", public=False)
    r = zoo.get("/users/tina")
    assert r.status_code == 200 and "2 public models" in r.text
    assert "Tiny A" in r.text and "Wide B" in r.text and "Secret E" not in r.text
    assert zoo.get("/users/TINA").status_code == 200  # logins are case-insensitive
    assert zoo.get("/users/nobody").status_code == 404
    assert zoo.get("/users/..%2F..%2Fetc").status_code == 404
    assert zoo.get("/users/" + "x" * 500).status_code == 404
    tiny = next(m for m in zoo.http.get("/compare.json").json()["models"] if m["name"] == "Tiny A")
    page = zoo.get(f"/models/{tiny['id']}").text
    assert 'href="/users/tina"' in page
    assert 'href="/users/tina"' in zoo.get("/").text  # the cards link their publisher too
    # A gist's owner.url is /users/LOGIN: API clients still get GitHub's user JSON there.
    api = zoo.http.get("/users/tina", headers={"Accept": "application/vnd.github+json"})
    assert api.json()["login"] == "tina" and api.json()["type"] == "User"
    assert zoo.http.get("/users/nobody", headers={"Accept": "application/json"}).status_code == 404


@pytest.mark.parametrize(
    "text, value", [("10M", 10_000_000), ("1.5g", 1_500_000_000), (" 250 ", 250), ("", None), ("2k", 2000)]
)
def test_parse_number(text, value):
    assert parse_number("x", text) == value


def test_ten_thousand_ids_are_refused_without_reading_them_all():
    from caffezoo.server.compare import CompareQuery

    with pytest.raises(BadQuery, match="ids: at most 20"):
        CompareQuery.parse({}, [",".join(f"m{i}" for i in range(10_000))])
    with pytest.raises(BadQuery, match="ids: at most 20"):
        CompareQuery.parse({}, [f"m{i}" for i in range(10_000)])


def test_parse_number_refuses_words():
    with pytest.raises(BadQuery, match="x: expected a number"):
        parse_number("x", "lots")
