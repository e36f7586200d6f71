"""Keeps docs/HTTP_API.md true: every documented route answers with its keys."""

import json
import os
import re
import urllib.parse

import pytest
from werkzeug import test as werkzeug_test

from tensorboard.backend import application
from tensorboard.plugins import base_plugin

from tb_varupdate import plugin

import logdirs

DOC = os.path.join(os.path.dirname(__file__), os.pardir, "docs", "HTTP_API.md")

# Values for the placeholders the doc's headings use.
PLACEHOLDERS = {
    "R": "hand", "T": logdirs.HAND_TAG, "V": "a", "V2": "c", "N": "3", "I": "0", "I2": "1",
    "R1": "hand", "R2": logdirs.STEP500_RUN,
}


def read_doc():
    with open(DOC, encoding="utf-8") as handle:
        return handle.read()


def sections():
    """[(heading text after GET, section body)] for each `## \\`GET ...\\`` heading."""
    text = read_doc()
    found = []
    matches = list(re.finditer(r"^## `GET ([^`]+)`[^\n]*$", text, re.M))
    for index, match in enumerate(matches):
        end = text.find("\n## ", match.end())
        found.append((match.group(1), text[match.end(): end if end >= 0 else len(text)]))
    return found


def top_level_keys(example):
    """The keys of the outermost object of a JSON-like example.

    The examples use placeholders (`[ROW, ...]`, `{...}`), so they are not
    JSON; only quoted keys at brace depth 1 are read.
    """
    keys, depth, index = [], 0, 0
    while index < len(example):
        char = example[index]
        if char == '"':
            end = example.index('"', index + 1)
            if depth == 1 and example[end + 1:].lstrip().startswith(":"):
                keys.append(example[index + 1:end])
            index = end + 1
            continue
        if char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
        index += 1
    return keys


def route_url(heading):
    """The request path for a heading such as `series?run=R&tag=T&variable=V[&variable=V2...]`."""
    plain = heading.replace("[", "").replace("]", "").replace("...", "")
    name, _, query = plain.partition("?")
    pairs = [(key, PLACEHOLDERS[value]) for key, value in urllib.parse.parse_qsl(query)]
    return name, "/data/plugin/varupdate/%s?%s" % (name, urllib.parse.urlencode(pairs))


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    logdir = str(tmp_path_factory.mktemp("doc"))
    logdirs.write_step500_run(logdir)
    logdirs.write_records(os.path.join(logdir, "hand"), logdirs.hand_records())
    provider, _ = logdirs.load_provider(logdir)
    context = base_plugin.TBContext(data_provider=provider, logdir=logdir)
    return werkzeug_test.Client(
        application.TensorBoardWSGI([plugin.VarUpdatePlugin(context)], data_provider=provider)
    )


def test_doc_names_every_json_route():
    documented = {route_url(heading)[0] for heading, _ in sections()}
    apps = plugin.VarUpdatePlugin(base_plugin.TBContext()).get_plugin_apps()
    # "/*" answers the JSON 404 of every other path.
    served = {route.lstrip("/") for route in apps if route not in ("/index.js", "/static/*", "/*")}
    assert documented == served


@pytest.mark.parametrize("heading, body", sections(), ids=[h.partition("?")[0] for h, _ in sections()])
def test_documented_route_answers_with_documented_keys(client, heading, body):
    example = re.search(r"```json\n(.*?)```", body, re.S).group(1)
    _, url = route_url(heading)
    response = client.get(url)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    answer = json.loads(response.get_data())
    assert list(answer) == top_level_keys(example)


def test_documented_row_keys_match_variables_rows(client):
    (body,) = [body for heading, body in sections() if heading.startswith("variables")]
    prose = body[body.index("A ROW has:"):]
    prose = prose.split("\n\n")[0]
    # Parentheses list the values of a key, not keys.
    names = re.findall(r"`([a-z_0-9]+)`", re.sub(r"\([^)]*\)", "", prose))
    response = client.get("/data/plugin/varupdate/variables?run=hand&tag=" + logdirs.HAND_TAG)
    (row, *_) = json.loads(response.get_data())["rows"]
    assert sorted(names) == sorted(row)


def test_documented_error_shape(client):
    response = client.get("/data/plugin/varupdate/variables?run=nope&tag=x")
    assert response.status_code == 404
    assert list(json.loads(response.get_data())) == ["error"]
    assert '{"error": "<message>"}' in read_doc()
