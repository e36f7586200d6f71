import test from "node:test";
import assert from "node:assert/strict";

import "./vocabulary-fixture.mjs";

import { bannerLines, formatFraction, formatNumber, formatShape, formatStep, shapeSize, statusLabel } from "../static/format.js";

test("formatNumber uses exponents only for very small or large values", () => {
  assert.equal(formatNumber(0.0123), "0.0123");
  assert.equal(formatNumber(1.5e-7), "1.5e-7");
  assert.equal(formatNumber(1.234e-7), "1.23e-7");
  assert.equal(formatNumber(1e-4, 2), "1e-4");
  assert.equal(formatNumber(123456), "1.23e+5");
  assert.equal(formatNumber(0), "0");
  assert.equal(formatNumber(null), "\u2013");
  assert.equal(formatNumber(Infinity), "Inf");
});

test("formatFraction keeps tiny non-zero fractions distinguishable from zero", () => {
  assert.equal(formatFraction(0), "0%");
  assert.equal(formatFraction(1), "100%");
  assert.equal(formatFraction(0.125), "12.5%");
  assert.equal(formatFraction(0.0001), "<0.1%");
  assert.equal(formatFraction(null), "\u2013");
});

test("formatShape and shapeSize handle scalars and unknown dimensions", () => {
  assert.equal(formatShape([3, 4]), "3 \u00d7 4");
  assert.equal(formatShape([]), "scalar");
  assert.equal(formatShape([null, 8]), "? \u00d7 8");
  assert.equal(shapeSize([3, 4]), 12);
  assert.equal(shapeSize([]), 1);
  assert.equal(shapeSize([null, 4]), 0);
  assert.equal(formatStep(null), "\u2013");
  assert.equal(formatStep(0), "0");
});

test("statusLabel shows the backend's label (frozen is decided there) and marks accepted rows", () => {
  assert.equal(statusLabel({ trainable: false, status: "never_updated", label: "frozen" }), "frozen");
  assert.equal(statusLabel({ trainable: true, status: "never_updated", label: "never updated" }), "never updated");
  assert.equal(statusLabel({ status: "tiny_updates" }), "tiny updates");
  assert.equal(statusLabel({ status: "never_updated", label: "never updated", allowed: true }), "accepted: never updated");
});

test("bannerLines counts problems per status out of the trainable variables", () => {
  const summary = {
    variables: 45, trainable: 42, problems: 4, warnings: 1,
    by_status: { non_finite: 1, never_updated: 3, stalled: 0, tiny_updates: 1, updating: 37 },
  };
  assert.deepEqual(bannerLines(summary), {
    tone: "problem",
    lines: [
      { status: "non_finite", count: 1, text: "1 of 42 trainable variables became NaN or Inf" },
      { status: "never_updated", count: 3, text: "3 of 42 trainable variables never updated" },
      { status: "tiny_updates", count: 1, text: "1 of 42 trainable variables have tiny updates" },
    ],
  });
});

test("bannerLines is a warning with only tiny updates, ok when all update", () => {
  const tiny = { variables: 2, trainable: 2, by_status: { tiny_updates: 1, updating: 1 } };
  assert.equal(bannerLines(tiny).tone, "warning");
  const fine = { variables: 3, trainable: 2, by_status: { updating: 2 } };
  assert.deepEqual(bannerLines(fine), {
    tone: "ok", lines: [{ status: "updating", count: 2, text: "All 2 trainable variables are updating" }],
  });
  assert.equal(bannerLines({ variables: 0, trainable: 0, by_status: {} }).tone, "empty");
  assert.equal(bannerLines(undefined).tone, "empty");
});
