// The verdict words the dashboard gets from the plugin's `vocabulary` route,
// read from vocabulary.json: written from verdicts/vocabulary.py, their one
// owner, and kept equal to it by tests/test_vocabulary.py. Imported first by
// every test of a module that names verdicts.

import { readFileSync } from "node:fs";

import { setVocabulary } from "../static/vocabulary.js";

setVocabulary(JSON.parse(readFileSync(new URL("./vocabulary.json", import.meta.url), "utf8")));
