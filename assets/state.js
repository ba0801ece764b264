/* The view-state reducers, run in the browser so that events apply in the order they happen.
 *
 * Every control of the page is an input of one of three reducers (Summit, Topology,
 * Training). Each applies its event to the state the previous event wrote, synchronously,
 * and writes the new state to the "state" store and to the URL. Reducers on the server,
 * reading the state as a callback State, raced: Dash drops a request still in flight when
 * the same callback fires again (the first event was lost), and two reducers' requests
 * each overwrote the other's change.
 *
 * No fact is defined here: ids, bounds, choices, labels and URL keys come from the server
 * in the "state-rules" store (dashboard/views/shell.py state_rules). The Python functions
 * apply_event, apply_topology_event and apply_training_event are the reference
 * implementation; tests/e2e/test_reducers_e2e.py checks that both agree on random events.
 */
(function () {
  "use strict";

  // -- values ------------------------------------------------------------------------------

  /* An int from an int, an integral float or a string of digits; else null
   * (dashboard/views/summit/state.py as_int). */
  function asInt(value) {
    if (typeof value === "number") {
      return Number.isInteger(value) ? value : null;
    }
    if (typeof value === "string" && /^\s*-?\d{1,9}\s*$/.test(value)) {
      return parseInt(value, 10);
    }
    return null;
  }

  /* An int (not a boolean) in [0, size); size null: any int >= 0 (dashboard.state.is_index). */
  function isIndex(value, size) {
    return Number.isInteger(value) && value >= 0 && (size === null || value < size);
  }

  function isPlainObject(value) {
    return value !== null && typeof value === "object" && !Array.isArray(value);
  }

  /* Python's truthiness. */
  function truthy(value) {
    if (Array.isArray(value)) {
      return value.length > 0;
    }
    if (isPlainObject(value)) {
      return Object.keys(value).length > 0;
    }
    return Boolean(value);
  }

  /* Python's round(): halves to even. */
  function roundHalfEven(x) {
    const r = Math.round(x);
    return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  /* The number in value (a number or a decimal string), or null (Python's float()). */
  function asFloat(value) {
    if (typeof value === "number") {
      return value;
    }
    if (typeof value === "string" &&
        /^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$/.test(value)) {
      return Number(value);
    }
    return null;
  }

  /* value clamped into [lo, hi] and rounded; null if it is not a finite number
   * (dashboard.state.clamp). */
  function clamp(value, lo, hi) {
    const number = asFloat(value);
    if (number === null || !Number.isFinite(number)) {
      return null;
    }
    return roundHalfEven(Math.min(Math.max(number, lo), hi));
  }

  function bounds(rules) {
    const b = rules.bounds;
    return {
      isClass: (v) => isIndex(v, b.num_classes),
      isLayer: (v) => isIndex(v, b.num_layers),
      isNode: (v) => {
        const m = typeof v === "string" ? /^(\d{1,3})-(\d{1,6})$/.exec(v) : null;
        if (!m) {
          return false;
        }
        const layer = Number(m[1]);
        const channel = Number(m[2]);
        return layer < Math.min(b.num_layers, b.channels.length) && channel < b.channels[layer];
      },
      traceImages: b.trace_images,
      traceLayers: b.trace_layers,
    };
  }

  // -- the state ---------------------------------------------------------------------------

  /* A copy with changes applied; comparing a class with itself is dropped
   * (ViewState.with_). */
  // The fields of the selected class and their defaults (ViewState.url_rules), set by
  // every reducer from its rules before it applies an event.
  let classRules = {perClass: [], defaults: {}};

  function useRules(rules) {
    classRules = {perClass: rules.url.per_class || [], defaults: rules.url.defaults};
  }

  function withChanges(state, changes) {
    const next = Object.assign({}, state, changes);
    // Another class: the previous class's fields go back to their defaults
    // (ViewState.class_changes), unless the change sets them.
    if ("cls" in changes && changes.cls !== state.cls) {
      for (const field of classRules.perClass) {
        if (!(field in changes)) {
          next[field] = classRules.defaults[field];
        }
      }
    }
    if (next.compare !== null && next.compare !== undefined && next.compare === next.cls) {
      next.compare = null;
    }
    return next;
  }

  function same(a, b) {
    return JSON.stringify(a) === JSON.stringify(b);
  }

  /* The query that reproduces state (ViewState.to_search). */
  function toSearch(state, rules) {
    const url = rules.url;
    const defaults = url.defaults;
    const params = [["v", String(state.v)]];
    if (state.atlas !== null && state.atlas !== undefined) {
      params.push(["atlas", state.atlas]);
    }
    params.push(["class", String(state.cls)]);
    for (const field of url.fields) {
      const value = state[field];
      if (value !== null && value !== undefined && value !== defaults[field]) {
        params.push([url.keys[field], String(value)]);
      }
    }
    const encode = (text) => encodeURIComponent(text).replace(/%40/g, "@").replace(/%20/g, "+");
    return "?" + params.map(([k, v]) => encode(k) + "=" + encode(v)).join("&");
  }

  /* The component that fired and its value (a pattern-matching id as its object). */
  function triggered() {
    const fired = window.dash_clientside.callback_context.triggered;
    if (!fired || !fired.length) {
      return [null, undefined];
    }
    const propId = fired[0].prop_id;
    let id = propId.slice(0, propId.lastIndexOf("."));
    if (id.startsWith("{")) {
      try {
        id = JSON.parse(id);
      } catch (error) {
        return [null, undefined];
      }
    }
    return [id, fired[0].value];
  }

  // -- the reducers (pure) -----------------------------------------------------------------

  /* The state after one event of the Summit views (dashboard/views/summit/state.py apply_event). */
  function applySummit(state, trigger, value, rules) {
    useRules(rules);
    const b = bounds(rules);
    const kind = typeof trigger === "string" ? rules.summit.events[trigger] : undefined;
    if (kind === "row") {
      const picked = isPlainObject(value) ? asInt(value.cls) : null;
      return b.isClass(picked) ? withChanges(state, {cls: picked}) : state;
    }
    if (kind === "plot-class") {
      let custom = null;
      try {
        custom = value.points[0].customdata;
      } catch (error) {
        custom = null;
      }
      if (Array.isArray(custom)) {
        custom = custom.length ? custom[0] : null;
      }
      const picked = asInt(custom);
      return b.isClass(picked) ? withChanges(state, {cls: picked}) : state;
    }
    if (kind === "compare" && value === null) {
      return withChanges(state, {compare: null});
    }
    if (kind === "class" || kind === "compare") {
      const number = asInt(value);
      const field = kind === "class" ? "cls" : "compare";
      return b.isClass(number) ? withChanges(state, {[field]: number}) : state;
    }
    if (kind === "layer") {
      const number = asInt(value);
      return b.isLayer(number) ? withChanges(state, {layer: number}) : state;
    }
    if (kind === "node-min" || kind === "edge-min") {
      const number = asInt(value);
      const field = kind === "node-min" ? "node_min" : "edge_min";
      const valid = number !== null && number >= 0 && number <= 100;
      return valid ? withChanges(state, {[field]: number}) : state;
    }
    if (kind === "sort") {
      return rules.summit.sort.includes(value) ? withChanges(state, {sort: value}) : state;
    }
    if (kind === "node") {
      const node = isPlainObject(value) ? value.id : null;
      return b.isNode(node) ? withChanges(state, {node: node}) : state;
    }
    if (kind === "close") {
      return withChanges(state, {node: null});
    }
    if (kind === "pictures") {
      return rules.summit.pictures.includes(value) ? withChanges(state, {pics: value}) : state;
    }
    if (kind === "subset") {  // the radio: a whole subset (a confusion pair comes by link)
      return rules.summit.subsets.includes(value)
        ? withChanges(state, {subset: value, mistaken_for: null})
        : state;
    }
    return state;
  }

  /* [state, message] after one Topology event (dashboard/views/topology/state.py apply_topology_event). */
  function applyTopology(state, trigger, value, rules) {
    useRules(rules);
    const t = rules.topology;
    if (isPlainObject(trigger)) {
      const rank = trigger.index;
      if (trigger.type !== t.shape_type || !isIndex(rank, null) || !truthy(value)) {
        return [state, null];
      }
      return [withChanges(state, {topo_shape: state.topo_shape === rank ? null : rank}), null];
    }
    if (trigger === t.graph) {
      const node = isPlainObject(value) ? value.node : null;
      return [isIndex(node, null) ? withChanges(state, {topo_node: node}) : state, null];
    }
    let field;
    let next;
    let message = null;
    if (trigger === t.layer) {
      if (!bounds(rules).isLayer(value)) {
        return [state, "Unknown layer: ignored."];
      }
      field = "topo_layer";
      next = value;
    } else if (typeof trigger === "string" && t.bounds[trigger]) {
      const [name, lo, hi, label] = t.bounds[trigger];
      const number = clamp(value, lo, hi);
      if (number === null) {
        return [state, `${label} must be a number from ${lo} to ${hi}: value ignored.`];
      }
      field = name;
      next = number;
      if (asFloat(value) !== number) {
        message = `${label} ${value} is outside ${lo}–${hi}: using ${number}.`;
      }
    } else if (typeof trigger === "string" && t.choices[trigger]) {
      const [name, options] = t.choices[trigger];
      if (!options.includes(value)) {
        return [state, "Unknown choice: ignored."];
      }
      field = name;
      next = value;
    } else {
      return [state, null];
    }
    if (state[field] === next) {
      return [state, message];
    }
    const changes = {[field]: next};
    if (t.graph_fields.includes(field)) {
      changes.topo_node = null;
      changes.topo_shape = null;
    }
    return [withChanges(state, changes), message];
  }

  /* The state after one Training event (dashboard/views/training/state.py apply_training_event). */
  function applyTraining(state, trigger, value, rules) {
    useRules(rules);
    const b = bounds(rules);
    const kind = typeof trigger === "string" ? rules.training.events[trigger] : undefined;
    if (b.traceImages === null || b.traceImages === undefined) {
      return state;
    }
    if (kind === "pick") {
      const row = isPlainObject(value) ? value.row : null;
      return isIndex(row, b.traceImages) ? withChanges(state, {trace_row: row}) : state;
    }
    if (kind === "layer") {
      return isIndex(value, b.traceLayers) ? withChanges(state, {trace_layer: value}) : state;
    }
    if (kind === "filter") {
      return rules.training.filters.includes(value)
        ? withChanges(state, {trace_filter: value})
        : state;
    }
    if (kind === "all") {
      return withChanges(state, {trace_all: truthy(value) ? 1 : 0});
    }
    return state;
  }

  // -- the callbacks -----------------------------------------------------------------------

  function reduceSummit(...args) {
    const rules = args[args.length - 1];
    const state = args[args.length - 2];
    const noUpdate = window.dash_clientside.no_update;
    const [trigger, value] = triggered();
    const next = applySummit(state, trigger, value, rules);
    const kind = typeof trigger === "string" ? rules.summit.events[trigger] : undefined;
    if (same(next, state)) {
      // e.g. comparing a class with itself: keep the dropdown honest.
      if (kind === "compare" && value !== next.compare) {
        return [noUpdate, noUpdate, next.compare, noUpdate];
      }
      return [noUpdate, noUpdate, noUpdate, noUpdate];
    }
    return [
      next,
      kind === "class" ? noUpdate : next.cls,
      next.compare !== state.compare || kind === "compare" ? next.compare : noUpdate,
      toSearch(next, rules),
    ];
  }

  function reduceTopology(...args) {
    const rules = args[args.length - 1];
    const state = args[args.length - 2];
    const noUpdate = window.dash_clientside.no_update;
    const [trigger, value] = triggered();
    const [next, message] = applyTopology(state, trigger, value, rules);
    const shown = message
      ? {
          type: "Div",
          namespace: "dash_html_components",
          props: {children: message, className: "note note-missing"},
        }
      : null;
    const echo = trigger === rules.topology.intervals ? next.topo_intervals : noUpdate;
    if (same(next, state)) {
      return [noUpdate, shown, echo, noUpdate];
    }
    return [next, shown, echo, toSearch(next, rules)];
  }

  function reduceTraining(...args) {
    const rules = args[args.length - 1];
    const state = args[args.length - 2];
    const noUpdate = window.dash_clientside.no_update;
    const [trigger, value] = triggered();
    const next = applyTraining(state, trigger, value, rules);
    return same(next, state) ? [noUpdate, noUpdate] : [next, toSearch(next, rules)];
  }

  window.dash_clientside = Object.assign({}, window.dash_clientside, {
    network_atlas_state: {
      reduceSummit,
      reduceTopology,
      reduceTraining,
      // pure, for the tests that compare them with the Python reference
      applySummit,
      applyTopology,
      applyTraining,
      toSearch,
    },
  });
})();
