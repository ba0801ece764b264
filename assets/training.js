/* Training view: one delegated click listener for the image grid and the proponent /
 * opponent thumbnails (instead of a pattern-matching input per tile).
 * A grid tile (.trace-tile[data-row]) writes the store "trace-pick" (dashboard/ids.py
 * TRACE_PICK); a training example (.trace-example[data-class]) selects its class in every
 * view through the sidebar's store "row-click" (ids.ROW_CLICK).
 */
document.addEventListener("click", function (event) {
  var dash = window.dash_clientside;
  if (!event.target.closest || !dash || !dash.set_props) {
    return;
  }
  var tile = event.target.closest(".trace-tile[data-row]");
  if (tile) {
    dash.set_props("trace-pick", {data: {row: Number(tile.dataset.row), at: Date.now()}});
    return;
  }
  var example = event.target.closest(".trace-example[data-class]");
  if (example) {
    dash.set_props("row-click", {data: {cls: Number(example.dataset.class), at: Date.now()}});
  }
});
