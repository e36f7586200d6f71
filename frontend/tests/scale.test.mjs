import test from "node:test";
import assert from "node:assert/strict";

import { NO_CHANGE_COLOR, RAMP } from "../static/constants.js";
import { cellAt, cellColor, cellPixels, finiteOrNull, forLogScale, heatmapLayout, legendTicks, logDomain, rampColor, rowAt } from "../static/scale.js";

test("rampColor hits the stops at the ends and the middle, and clamps", () => {
  assert.equal(rampColor(0), RAMP[0]);
  assert.equal(rampColor(1), RAMP[RAMP.length - 1]);
  assert.equal(rampColor(0.5), RAMP[2]);
  assert.equal(rampColor(-3), RAMP[0]);
  assert.equal(rampColor(7), RAMP[RAMP.length - 1]);
  assert.equal(rampColor(0.125, ["#000000", "#ffffff"]), "#202020");
});

test("logDomain spans whole decades of the positive values, ignoring 0 and null", () => {
  assert.deepEqual(logDomain([[0, null, 3e-6], [0.02, null]]), [-6, -1]);
  assert.deepEqual(logDomain([[1e-3, 1e-3]]), [-3, -2]);
  assert.equal(logDomain([[0, null]]), null);
  assert.equal(logDomain([]), null);
});

test("cellColor separates not logged, no change and the log ramp", () => {
  const domain = [-6, -2];
  assert.equal(cellColor(null, domain), null);
  assert.equal(cellColor(0, domain), NO_CHANGE_COLOR);
  assert.equal(cellColor(1e-6, domain), RAMP[0]);
  assert.equal(cellColor(1e-4, domain), RAMP[2]);
  assert.equal(cellColor(1e-2, domain), RAMP[4]);
  assert.equal(cellColor(5, domain), RAMP[4]);
  assert.ok(!RAMP.includes(NO_CHANGE_COLOR));
});

test("legendTicks puts one tick per decade", () => {
  assert.deepEqual(legendTicks([-3, -1]), [{ t: 0, label: "1e-3" }, { t: 0.5, label: "1e-2" }, { t: 1, label: "1e-1" }]);
  assert.equal(legendTicks([-12, 0]).length, 7);
  assert.deepEqual(legendTicks(null), []);
});

test("heatmapLayout shrinks rows for many variables and drops unreadable labels", () => {
  const few = heatmapLayout(5, 100, 1240);
  assert.equal(few.rowHeight, 18);
  assert.equal(few.showLabels, true);
  assert.equal(few.colWidth, 10);
  const many = heatmapLayout(2000, 100, 1000);
  assert.equal(many.rowHeight, 2);
  assert.equal(many.showLabels, false);
  assert.equal(many.left, 0);
  assert.equal(many.height, 4000);
});

test("cellAt and rowAt map canvas points to cells", () => {
  const layout = heatmapLayout(5, 100, 1240);
  assert.deepEqual(cellAt(240, 0, layout), { row: 0, col: 0 });
  assert.deepEqual(cellAt(1239, 89, layout), { row: 4, col: 99 });
  assert.equal(cellAt(100, 10, layout), null);
  assert.equal(cellAt(500, 90, layout), null);
  assert.equal(rowAt(100, layout), null);
  assert.equal(rowAt(40, layout), 2);
});

test("forLogScale and finiteOrNull turn unplottable values into gaps", () => {
  assert.deepEqual(forLogScale([1, 0, -1, null, Infinity, 2e-9]), [1, null, null, null, null, 2e-9]);
  assert.deepEqual(finiteOrNull([1, 0, null, NaN, -2]), [1, 0, null, null, -2]);
  assert.deepEqual(finiteOrNull(undefined), []);
});

test("alignSeries joins runs logged at different steps onto one x axis", async () => {
  const { alignSeries } = await import("../static/scale.js");
  const aligned = alignSeries([
    { step: [0, 10, 20], values: [1, 2, NaN] },
    { step: [5, 10], values: [7, null] },
  ]);
  assert.deepEqual(aligned, [[0, 5, 10, 20], [1, null, 2, null], [null, 7, null, null]]);
  assert.deepEqual(alignSeries([]), [[]]);
});

test("cellPixels paints cellColor's colours, one RGBA pixel per cell", () => {
  const hex = (pixels, i) => "#" + [...pixels.slice(i * 4, i * 4 + 3)].map((c) => c.toString(16).padStart(2, "0")).join("");
  const domain = [-6, -2];
  const matrix = [[null, 0, 1e-6], [1e-4, 1e-2, 5], [Infinity, -1]];
  const pixels = cellPixels(matrix, 3, domain);
  assert.equal(pixels.length, 3 * 3 * 4);
  const alpha = [...pixels].filter((_, i) => i % 4 === 3);
  // Not logged, a negative value and the cell the short last row lacks stay transparent.
  assert.deepEqual(alpha, [0, 255, 255, 255, 255, 255, 255, 0, 0]);
  for (const i of [1, 2, 3, 4, 5, 6]) assert.equal(hex(pixels, i), cellColor(matrix[Math.floor(i / 3)][i % 3], domain));
  // Between the stops, within the 257 levels' rounding of the exact ramp.
  for (const value of [3e-6, 2.2e-5, 7.7e-4, 4e-3]) {
    const [got] = [cellPixels([[value]], 1, domain)];
    const want = cellColor(value, domain);
    for (let k = 0; k < 3; k++) {
      assert.ok(Math.abs(got[k] - parseInt(want.slice(1 + 2 * k, 3 + 2 * k), 16)) <= 3, `${value} channel ${k}`);
    }
  }
  // No domain (no positive value): every positive cell takes the ramp's top.
  assert.equal(hex(cellPixels([[0.5]], 1, null), 0), cellColor(0.5, null));
});
