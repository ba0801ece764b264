/* Sidebar rows: one delegated click listener instead of a pattern-matching id per row.
 *
 * With a few hundred rows, an ALL pattern-matching input makes the Dash renderer spend
 * seconds per click resolving dependencies; a single store written with set_props costs
 * nothing. The store id must match dashboard/ids.py ROW_CLICK ("row-click").
 */
document.addEventListener("click", function (event) {
  var row = event.target.closest ? event.target.closest(".class-row[data-class]") : null;
  var dash = window.dash_clientside;
  if (!row || !dash || !dash.set_props) {
    return;
  }
  dash.set_props("row-click", {data: {cls: Number(row.dataset.class), at: Date.now()}});
});
