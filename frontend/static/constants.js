// Names, labels and colours shared by the dashboard's modules. No DOM, no fetching.

export const PLUGIN_NAME = "varupdate";

// Colours of the per-record gradient states (vocabulary.js names them).
export const GRADIENT_STATE_COLORS = {
  present: "#43a047",
  zero: "#fbc02d",
  none: "#e53935",
  non_finite: "#8e24aa",
  not_given: "#9e9e9e",
};

// Heatmap ramp (viridis stops): small relative updates dark, large bright.
export const RAMP = ["#440154", "#3b528b", "#21918c", "#5ec962", "#fde725"];
// "Logged but no change" must stand out from every ramp colour: red, since a
// trainable variable that never changes is what this dashboard hunts.
export const NO_CHANGE_COLOR = "#e53935";

// Palette for runs overlaid in one chart (TensorBoard-like run colours).
export const RUN_COLORS = ["#ff7043", "#0077bb", "#009988", "#ee3377", "#33bbee", "#cc3311", "#bbbbbb", "#ee7733"];

export const VIEWS = ["overview", "heatmap", "compare"];
export const VIEW_LABELS = { overview: "Overview", heatmap: "Heatmap", compare: "Compare runs" };

export const SAMPLES_FLAG = "--samples_per_plugin=varupdate=0";

// Table rows are a fixed height so that 2,000 variables can be virtualised:
// only the rows in view (plus OVERSCAN on each side) exist in the DOM.
export const ROW_HEIGHT = 44;
export const OVERSCAN = 8;

// Buckets asked of the heatmap route; the server caps it at 1000.
export const HEATMAP_BUCKETS = 100;

export const STORAGE_KEY = "tb-varupdate.state";
