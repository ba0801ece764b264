/* Links that change a few fields of the view (dashboard/views/common.py state_link).
 *
 * A view builds its links from its group's copy of the state, which may be older than the
 * URL in the fields other groups own (a Topology parameter changed since, say). So a link
 * carries only its changes (data-query: {URL key: value, or null to remove}), and on a
 * click they are applied to the current address, which the reducers keep equal to the
 * state (assets/state.js). The link's own href is the fallback without this script.
 */
document.addEventListener(
  "click",
  function (event) {
    var link = event.target.closest ? event.target.closest("a[data-query]") : null;
    if (!link) {
      return;
    }
    var changes;
    try {
      changes = JSON.parse(link.getAttribute("data-query"));
    } catch (error) {
      return; // not ours: the href stands
    }
    var url = new URL(window.location.href);
    Object.keys(changes).forEach(function (key) {
      if (changes[key] === null) {
        url.searchParams.delete(key);
      } else {
        url.searchParams.set(key, changes[key]);
      }
    });
    link.setAttribute("href", url.pathname + url.search.replace(/%40/g, "@"));
  },
  true // before the browser follows the link
);

/* Back and Forward: the reducers push each state's URL (dcc.Location, no reload), so a
 * history step changes the address but not the views, which render from the state
 * store. The page is read from its URL once, when it loads: load it again, so what is
 * shown is always what the address says (the same URL loaded fresh). */
window.addEventListener("popstate", function () {
  window.location.reload();
});

/* Back to a page the browser kept whole (the back-forward cache: e.g. after the atlas
 * picker opened another atlas): its controls show what they showed when it was left
 * (the picker naming the other atlas), not what its address says. Load it again. */
window.addEventListener("pageshow", function (event) {
  if (event.persisted) {
    window.location.reload();
  }
});
