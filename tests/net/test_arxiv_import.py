"""`kb new <id> --arxiv` against a local arXiv-like Atom endpoint (never the real API)."""

from __future__ import annotations

from pathlib import Path

import pytest
from localserver import Reply, Script, closed_port

from kb import arxiv
from kb.errors import KBError
from kb.http import MinIntervalLimiter
from kb.yamlio import load_yaml
from kb_cli.main import main

# Shaped like the real API's answer for id_list=2306.11695 (facts from the paper's abstract page);
# the title is wrapped and indented the way arXiv wraps long titles.
WANDA_FEED = b"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <link href="http://arxiv.org/api/query?id_list%3D2306.11695" rel="self" type="application/atom+xml"/>
  <title type="html">ArXiv Query: search_query=&amp;id_list=2306.11695&amp;start=0&amp;max_results=1</title>
  <id>http://arxiv.org/api/a1b2c3</id>
  <updated>2024-05-07T00:00:00-04:00</updated>
  <opensearch:totalResults xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">1</opensearch:totalResults>
  <opensearch:startIndex xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">0</opensearch:startIndex>
  <opensearch:itemsPerPage xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">1</opensearch:itemsPerPage>
  <entry>
    <id>http://arxiv.org/abs/2306.11695v3</id>
    <updated>2024-05-06T17:49:31Z</updated>
    <published>2023-06-20T17:18:20Z</published>
    <title>A Simple and Effective Pruning Approach for Large Language
  Models</title>
    <summary>  As their size increases, Large Languages Models (LLMs) are natural candidates for
network pruning methods ...</summary>
    <author><name>Mingjie Sun</name></author>
    <author><name>Zhuang Liu</name></author>
    <author><name>Anna Bair</name></author>
    <author><name>J. Zico Kolter</name></author>
    <arxiv:comment xmlns:arxiv="http://arxiv.org/schemas/atom">ICLR 2024</arxiv:comment>
    <link href="http://arxiv.org/abs/2306.11695v3" rel="alternate" type="text/html"/>
    <link title="pdf" href="http://arxiv.org/pdf/2306.11695v3" rel="related" type="application/pdf"/>
    <arxiv:primary_category xmlns:arxiv="http://arxiv.org/schemas/atom" term="cs.CL" scheme="http://arxiv.org/schemas/atom"/>
    <category term="cs.CL" scheme="http://arxiv.org/schemas/atom"/>
  </entry>
</feed>
"""

EMPTY_FEED = b"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title type="html">ArXiv Query: id_list=2306.11695</title>
  <id>http://arxiv.org/api/empty</id>
  <opensearch:totalResults xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">0</opensearch:totalResults>
</feed>
"""

ERROR_FEED = b"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="http://www.w3.org/2005/Atom">
  <title type="html">ArXiv Query: id_list=0704.00001</title>
  <entry>
    <id>http://arxiv.org/api/errors#incorrect_id_format_for_0704.00001</id>
    <title>Error</title>
    <summary>incorrect id format for 0704.00001</summary>
    <updated>2024-05-07T00:00:00-04:00</updated>
    <author><name>arXiv api core</name></author>
  </entry>
</feed>
"""

ATOM = {"Content-Type": "application/atom+xml; charset=utf-8"}


def ok() -> Reply:
    return Reply(200, WANDA_FEED, ATOM)


@pytest.fixture
def api(serve, monkeypatch: pytest.MonkeyPatch):
    """Start an Atom endpoint whose answers follow `script` (a Script keyed by 'query')."""

    def start(*replies: Reply):
        script = Script(query=list(replies))
        server = serve(lambda req: script.next("query") if req.path == "/api/query" else None)
        monkeypatch.setenv("KB_ARXIV_API_URL", server.url("/api/query"))
        monkeypatch.setenv("KB_ARXIV_MIN_INTERVAL", "0.01")
        return server

    return start


def _new(capsys, *argv: str) -> tuple[int, str]:
    code = main(["new", *argv])
    return code, capsys.readouterr().err


def test_kb_new_scaffolds_a_record_from_the_feed(tmp_kb: Path, api, capsys) -> None:
    server = api(ok())
    code, err = _new(capsys, "demo", "--arxiv", "2306.11695")
    assert code == 0, err
    record = load_yaml(tmp_kb / "papers" / "demo.yaml").data
    assert record["id"] == "demo"
    assert record["title"] == "A Simple and Effective Pruning Approach for Large Language Models"
    assert record["authors"] == ["Mingjie Sun", "Zhuang Liu", "Anna Bair", "J. Zico Kolter"]
    assert record["year"] == 2023
    assert record["identifiers"] == {"arxiv": "2306.11695"}
    assert record["links"]["paper"] == "https://arxiv.org/abs/2306.11695"
    assert record["tags"]["type"] == ["TODO"]  # tags and take-away are left to the contributor
    assert (tmp_kb / "challenge" / "demo.md").read_text(encoding="utf-8").strip()
    [req] = server.requests
    assert req.query["id_list"] == ["2306.11695"] and req.query["max_results"] == ["1"]
    assert req.headers["user-agent"].startswith("pruning-kb/0.1.0 (")


@pytest.mark.parametrize(
    "given", ["arXiv:2306.11695v2", "https://arxiv.org/abs/2306.11695v3", " 2306.11695 "]
)
def test_ids_are_accepted_with_prefix_or_version(tmp_kb: Path, api, capsys, given: str) -> None:
    server = api(ok())
    code, err = _new(capsys, "demo", "--arxiv", given)
    assert code == 0, err
    assert server.requests[0].query["id_list"] == ["2306.11695"]


@pytest.mark.parametrize(
    "first", [Reply(503, b"busy"), Reply(200, EMPTY_FEED, ATOM), Reply(200, b"<feed", ATOM)]
)
def test_a_bad_page_is_retried(tmp_kb: Path, api, capsys, first: Reply) -> None:
    server = api(first, ok())
    code, err = _new(capsys, "demo", "--arxiv", "2306.11695")
    assert code == 0, err
    assert len(server.requests) == 2
    assert (tmp_kb / "papers" / "demo.yaml").exists()


def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kb: error: "), err
    return lines[0]


def _nothing_written(root: Path) -> bool:
    return not list((root / "papers").iterdir()) and not list((root / "challenge").iterdir())


def test_an_unknown_id_is_one_line_and_writes_nothing(tmp_kb: Path, api, capsys) -> None:
    server = api(Reply(200, EMPTY_FEED, ATOM))
    code, err = _new(capsys, "demo", "--arxiv", "2306.99999")
    assert code == 2
    assert "no paper 2306.99999" in _one_line_error(err)
    assert len(server.requests) == 4  # the first try and three retries
    assert _nothing_written(tmp_kb)


def test_an_error_entry_is_reported(tmp_kb: Path, api, capsys) -> None:
    server = api(Reply(200, ERROR_FEED, ATOM))
    code, err = _new(capsys, "demo", "--arxiv", "0704.00001")
    assert code == 2
    assert "arXiv rejected id '0704.00001': incorrect id format" in _one_line_error(err)
    assert len(server.requests) == 1
    assert _nothing_written(tmp_kb)


def test_persistent_server_errors_give_up(tmp_kb: Path, api, capsys) -> None:
    server = api(Reply(503, b"busy"))
    code, err = _new(capsys, "demo", "--arxiv", "2306.11695")
    assert code == 2 and "HTTP 503" in _one_line_error(err)
    assert len(server.requests) == 4
    assert _nothing_written(tmp_kb)


@pytest.mark.parametrize("bad", ["2306.116", "2313.11695", "not-an-id", "hep-th/9901001", "2306.11695v"])
def test_a_malformed_id_never_reaches_the_network(tmp_kb: Path, api, capsys, bad: str) -> None:
    server = api(ok())
    code, err = _new(capsys, "demo", "--arxiv", bad)
    assert code == 2 and "arXiv id" in _one_line_error(err)
    assert server.requests == []
    assert _nothing_written(tmp_kb)


@pytest.mark.parametrize("existing", ["papers/demo.yaml", "challenge/demo.md"])
def test_an_existing_file_is_refused_before_fetching(tmp_kb: Path, api, capsys, existing: str) -> None:
    server = api(ok())
    (tmp_kb / existing).write_text("mine\n", encoding="utf-8")
    code, err = _new(capsys, "demo", "--arxiv", "2306.11695")
    assert code == 2 and "already exists" in _one_line_error(err)
    assert server.requests == []
    assert (tmp_kb / existing).read_text(encoding="utf-8") == "mine\n"


def test_no_network_is_one_line_and_writes_nothing(
    tmp_kb: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("KB_ARXIV_API_URL", f"http://127.0.0.1:{closed_port()}/api/query")
    monkeypatch.setenv("KB_ARXIV_MIN_INTERVAL", "0")
    code, err = _new(capsys, "demo", "--arxiv", "2306.11695")
    assert code == 2 and "cannot reach the arXiv API" in _one_line_error(err)
    assert _nothing_written(tmp_kb)


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_the_limiter_spaces_requests_by_the_interval() -> None:
    clock = FakeClock()
    limiter = MinIntervalLimiter(clock=clock, sleep=clock.sleep)
    limiter.wait(3.0)  # the first request goes at once
    clock.now += 1.0  # one second of work
    limiter.wait(3.0)
    clock.now += 5.0  # long enough already
    limiter.wait(3.0)
    assert clock.slept == [2.0]


class RecordingLimiter:
    def __init__(self) -> None:
        self.intervals: list[float] = []

    def wait(self, interval: float) -> float:
        self.intervals.append(interval)
        return 0.0


def test_retries_back_off_and_respect_retry_after(serve) -> None:
    import httpx

    script = Script(q=[Reply(503), Reply(429, headers={"Retry-After": "20"}), Reply(503), ok()])
    server = serve(lambda req: script.next("q"))
    limiter = RecordingLimiter()
    with httpx.Client() as client:
        entry = arxiv.fetch_entry(
            "2306.11695", client=client, api_url=server.url("/q"), min_interval=3.0, limiter=limiter
        )
    assert entry.title.startswith("A Simple and Effective")
    # 3 s before the first request, then 3 * 2**k, unless Retry-After asks for longer.
    assert limiter.intervals == [3.0, 3.0, 20.0, 12.0]


def test_parse_feed_refuses_entity_declarations() -> None:
    evil = b'<?xml version="1.0"?><!DOCTYPE feed [<!ENTITY a "aaaa">]><feed xmlns="http://www.w3.org/2005/Atom"/>'
    with pytest.raises(arxiv.FeedError):
        arxiv.parse_feed(evil, "2306.11695")


def test_an_entry_for_another_id_does_not_count() -> None:
    assert arxiv.parse_feed(WANDA_FEED, "2301.00774") is None


def test_normalise_id_rejects_before_any_request() -> None:
    assert arxiv.normalise_id("ARXIV:2306.11695V2".replace("V2", "v2")) == "2306.11695"
    with pytest.raises(KBError):
        arxiv.normalise_id("")
