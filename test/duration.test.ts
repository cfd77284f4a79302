// formatDuration: the one duration format of progress lines (flux2 train's ETA, flux2 pull's).
import { test } from "node:test";
import assert from "node:assert/strict";
import { formatDuration } from "../src/util/duration.js";

test("formatDuration rounds up to whole seconds before splitting, so no field reads 60", () => {
  assert.equal(formatDuration(0), "0s");
  assert.equal(formatDuration(41.2), "42s");
  assert.equal(formatDuration(59.6), "1m00s");
  assert.equal(formatDuration(119.5), "2m00s");
  assert.equal(formatDuration(187), "3m07s");
  assert.equal(formatDuration(3599.4), "1h00m");
  assert.equal(formatDuration(3900), "1h05m");
  assert.equal(formatDuration(-1), "?");
  assert.equal(formatDuration(Infinity), "?");
  assert.equal(formatDuration(NaN), "?");
});
