/* Topology view: clicking a class in an opened Mapper node's table selects that class in
 * every view, through the same store the sidebar rows use (dashboard/ids.py ROW_CLICK,
 * "row-click"), so one delegated listener replaces a callback input per row.
 */
document.addEventListener("click", function (event) {
  var row = event.target.closest ? event.target.closest(".topo-class-row[data-class]") : null;
  var dash = window.dash_clientside;
  if (!row || !dash || !dash.set_props) {
    return;
  }
  dash.set_props("row-click", {data: {cls: Number(row.dataset.class), at: Date.now()}});
});
