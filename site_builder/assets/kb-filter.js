/* pruning-kb: the all-papers filter. Reads papers.json and builds facet checkboxes (deployable form, the six axes, the
   choice qualifiers such as the granularity of structured pruning, venue, origin, status and year), a text
   search and a sortable list. Matching: OR within a facet, AND across facets and search words.
   Each facet value shows how many papers it would give combined with the other facets' choices.
   The state lives in the query string (?type=structured&type-granularity=depth&sort=year&dir=desc),
   so a filtered view can be shared. Only textContent is used for data, never innerHTML. */
(function () {
  "use strict";

  var WIDE = "(min-width: 60em)";

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") { node.textContent = attrs[k]; } else { node.setAttribute(k, attrs[k]); }
    });
    (children || []).forEach(function (c) {
      if (c === null || c === undefined) { return; }
      node.appendChild(typeof c === "string" ? document.createTextNode(c) : c);
    });
    return node;
  }

  function capitalise(s) { return s.charAt(0).toUpperCase() + s.slice(1); }

  function labelOf(axis, id) {
    return (axis.values.filter(function (v) { return v.id === id; })[0] || { label: id }).label;
  }

  function hasStars(p) { return p.site.stars !== null && p.site.stars !== undefined; }

  /* Facets: {id, label, note, sub, values: [{id, label}], of(paper) -> [value ids]}. */
  function facetsOf(data) {
    var facets = [];
    if (data.forms) {  /* the deployable form first: the reader's first question */
      facets.push({
        id: "form", label: "Deployable form", values: data.forms.map(function (v) { return { id: v.id, label: v.label }; }),
        of: function (p) { return p.form || []; }
      });
    }
    data.axes.forEach(function (a) {
      facets.push({
        id: a.id, label: a.label, values: a.values.map(function (v) { return { id: v.id, label: v.label }; }),
        of: function (p) { return (p.tags[a.id] || []).map(function (t) { return t.value; }); }
      });
      (a.qualifiers || []).forEach(function (q) {
        facets.push({
          id: a.id + "-" + q.name, label: q.label || capitalise(q.name), sub: true,
          note: a.label + ": " + q.of.map(function (v) { return labelOf(a, v); }).join(", "),
          values: q.values.map(function (v) { return { id: v, label: (q.labels || {})[v] || capitalise(v) }; }),
          of: function (p) {
            var out = [];
            (p.tags[a.id] || []).forEach(function (t) {
              if (q.of.indexOf(t.value) < 0 || t[q.name] === undefined) { return; }
              out = out.concat(Array.isArray(t[q.name]) ? t[q.name] : [t[q.name]]);
            });
            return out;
          }
        });
      });
    });
    var venues = {}, years = {};
    data.papers.forEach(function (p) { venues[p.venue.name] = true; years[String(p.venue.year)] = true; });
    facets.push({
      id: "venue", label: "Venue",
      values: Object.keys(venues).sort(function (a, b) { return a.toLowerCase() < b.toLowerCase() ? -1 : 1; })
        .map(function (v) { return { id: v, label: v }; }),
      of: function (p) { return [p.venue.name]; }
    });
    if (data.origins) {
      facets.push({
        id: "origin", label: "Origin", values: data.origins.map(function (v) { return { id: v.id, label: v.label }; }),
        of: function (p) { return p.origin ? [p.origin.kind] : []; }
      });
    }
    /* Code: whether the authors published code, and whether this catalogue can run the paper itself. */
    facets.push({
      id: "code", label: "Code",
      values: [{ id: "official", label: "Official code" }, { id: "any", label: "Any code" },
               { id: "runnable", label: "Runnable here (kb reproduce)" }],
      of: function (p) {
        var out = [];
        var code = (p.links && p.links.code) || [];
        if (code.some(function (c) { return c.official; })) { out.push("official"); }
        if (code.length) { out.push("any"); }
        if (p.reproduce) { out.push("runnable"); }
        return out;
      }
    });
    facets.push({
      id: "status", label: "Status",
      values: (data.statuses || []).map(function (s) { return { id: s.id, label: s.label }; }),
      of: function (p) { return [p.venue.kind]; }
    });
    facets.push({
      id: "year", label: "Year",
      values: Object.keys(years).sort().reverse().map(function (v) { return { id: v, label: v }; }),
      of: function (p) { return [String(p.venue.year)]; }
    });
    return facets;
  }

  /* The text a search word is looked for in: names, authors, take-away, notes, venue, tags. */
  function haystack(data, p) {
    var parts = [p.id, p.title, p.short_name || "", p.authors.join(" "), p.takeaway, p.notes || "",
                 p.site.venue_label, p.venue.name];
    (data.forms || []).forEach(function (f) {
      if ((p.form || []).indexOf(f.id) >= 0) { parts.push(f.label, f.id); }
    });
    if (p.origin) { parts.push(p.origin.kind, p.origin.affiliations.join(" ")); }
    data.axes.forEach(function (a) {
      (p.tags[a.id] || []).forEach(function (t) {
        parts.push(a.label, labelOf(a, t.value), t.value);
        Object.keys(t).forEach(function (k) {
          if (k !== "value") { parts.push(Array.isArray(t[k]) ? t[k].join(" ") : String(t[k])); }
        });
      });
    });
    return parts.join(" ").toLowerCase();
  }

  function readState(facets, sorts) {
    var params = new URLSearchParams(window.location.search);
    var state = { selected: {}, q: params.get("q") || "", sort: "year", dir: "desc" };
    facets.forEach(function (f) {
      var known = {};
      f.values.forEach(function (v) { known[v.id] = true; });
      var raw = params.get(f.id);
      state.selected[f.id] = (raw ? raw.split(",") : []).filter(function (v) { return known[v]; });
    });
    if (sorts[params.get("sort")]) { state.sort = params.get("sort"); }
    if (params.get("dir") === "asc" || params.get("dir") === "desc") { state.dir = params.get("dir"); }
    return state;
  }

  function writeState(facets, state) {
    var parts = [];
    facets.forEach(function (f) {
      if (state.selected[f.id].length) {
        parts.push(f.id + "=" + state.selected[f.id].map(encodeURIComponent).join(","));
      }
    });
    if (state.q) { parts.push("q=" + encodeURIComponent(state.q)); }
    if (state.sort !== "year" || state.dir !== "desc") {
      parts.push("sort=" + state.sort);
      parts.push("dir=" + state.dir);
    }
    var url = window.location.pathname + (parts.length ? "?" + parts.join("&") : "") + window.location.hash;
    window.history.replaceState(null, "", url);
  }

  function badge(base, axis, tags) {
    var span = el("span", { "class": "kb-badge kb-axis-" + axis.id, "data-axis": axis.id }, [
      el("a", { "class": "kb-badge__axis", href: base + "concepts/" + axis.id + "/", text: axis.label })
    ]);
    tags.forEach(function (t) {
      var a = el("a", { "class": "kb-badge__value", href: base + "concepts/" + axis.id + "/#" + t.value }, [
        el("span", { "class": "kb-sr", text: axis.label + ": " }), labelOf(axis, t.value)
      ]);
      span.appendChild(a);
    });
    return span;
  }

  function links(p) {
    var out = [el("a", { href: p.links.paper, rel: "noopener", text: p.identifiers.arxiv ? "arXiv" : "Paper" })];
    p.links.code.forEach(function (c) {
      out.push(c.official
        ? el("a", { href: c.url, rel: "noopener", "class": "kb-official", text: "Code (official)" })
        : el("a", { href: c.url, rel: "noopener", "class": "kb-unofficial", text: "Code (unofficial)" }));
    });
    return out;
  }

  /* The record's deployable forms, in the list's order (most deployable first). */
  function formBadge(base, data, p) {
    var mine = (data.forms || []).filter(function (f) { return (p.form || []).indexOf(f.id) >= 0; });
    if (!mine.length) { return null; }
    var span = el("span", { "class": "kb-badge kb-form", "data-axis": "form" }, [
      el("a", { "class": "kb-badge__axis", href: base + "concepts/form/", text: "Form" })
    ]);
    mine.forEach(function (f) {
      span.appendChild(el("a", { "class": "kb-badge__value kb-form-" + f.id, href: base + "concepts/form/#" + f.id }, [
        el("span", { "class": "kb-sr", text: "Form: " }), f.label
      ]));
    });
    return span;
  }

  function row(base, data, p, withStars) {
    var tags = el("span", { "class": "kb-tagflow" },
      [formBadge(base, data, p)].concat(data.axes.map(function (a) { return badge(base, a, p.tags[a.id] || []); })));
    var cells = [
      el("td", { "class": "kb-title" }, [
        el("a", { href: base + p.site.page, text: p.short_name || p.title }),
        p.short_name ? el("small", { text: p.title }) : null
      ]),
      el("td", { "class": "kb-venue-cell", text: p.site.venue_label }),
      el("td", { "class": "kb-year-cell", text: String(p.venue.year) }),
      el("td", { "class": "kb-tags-cell" }, [tags]),
      el("td", { "class": "kb-links" }, links(p))
    ];
    if (withStars) {
      cells.push(el("td", { text: hasStars(p) ? "★ " + p.site.stars : "–",
                            title: p.site.stars_as_of ? "as of " + p.site.stars_as_of : "" }));
    }
    return el("tr", { "data-id": p.id }, cells);
  }

  function setup(root, data) {
    var base = root.getAttribute("data-base") || "";
    var withStars = data.papers.some(hasStars);
    var sorts = {
      title: function (p) { return (p.short_name || p.title).toLowerCase(); },
      venue: function (p) { return p.site.venue_label.toLowerCase(); },
      year: function (p) { return p.venue.year * 10000 + p.year; }
    };
    if (withStars) { sorts.stars = function (p) { return hasStars(p) ? p.site.stars : -1; }; }
    var facets = facetsOf(data);
    var state = readState(facets, sorts);
    var texts = {};
    data.papers.forEach(function (p) { texts[p.id] = haystack(data, p); });
    var boxes = [];
    var counters = [];

    var search = el("input", { type: "search", id: "kb-search", placeholder: "Search titles, authors, take-aways, tags…",
                               "aria-label": "Search titles, authors, take-aways and tags" });
    search.value = state.q;
    var clear = el("button", { type: "button", "class": "kb-filter__clear", text: "Clear all filters" });
    var count = el("span", { "class": "kb-filter__count", id: "kb-count", "aria-live": "polite" });
    var grid = el("div", { "class": "kb-filter__facets" });
    var active = el("span", { "class": "kb-filter__active" });
    var panel = el("details", { "class": "kb-filter__panel" }, [el("summary", {}, ["Filters ", active]), grid]);

    facets.forEach(function (f) {
      var used = f.values.filter(function (v) {
        return data.papers.some(function (p) { return f.of(p).indexOf(v.id) >= 0; });
      });
      if (!used.length) { return; }
      var set = el("fieldset", { "data-facet": f.id, "class": f.sub ? "kb-sub" : "" }, [
        el("legend", {}, [f.label, f.note ? el("small", { text: " (" + f.note + ")" }) : null])
      ]);
      used.forEach(function (v) {
        var box = el("input", { type: "checkbox", "data-facet": f.id, value: v.id, id: "kb-f-" + f.id + "-" + v.id });
        box.checked = state.selected[f.id].indexOf(v.id) >= 0;
        boxes.push(box);
        var n = el("span", { "class": "kb-n" });
        var label = el("label", { "for": box.id }, [box, el("span", { text: v.label }), n]);
        counters.push({ facet: f, value: v.id, n: n, label: label });
        set.appendChild(label);
      });
      grid.appendChild(set);
    });

    var heads = [["title", "Paper"], ["venue", "Venue"], ["year", "Year"], [null, "Tags"], [null, "Links"]];
    if (withStars) { heads.push(["stars", "Stars"]); }
    var headRow = el("tr");
    heads.forEach(function (h) {
      var th = el("th", { scope: "col" });
      if (h[0]) {
        th.setAttribute("data-sort", h[0]);
        var b = el("button", { type: "button", text: h[1] });
        b.addEventListener("click", function () {
          if (state.sort === h[0]) { state.dir = state.dir === "asc" ? "desc" : "asc"; }
          else { state.sort = h[0]; state.dir = h[0] === "title" || h[0] === "venue" ? "asc" : "desc"; }
          update();
        });
        th.appendChild(b);
      } else {
        th.textContent = h[1];
      }
      headRow.appendChild(th);
    });
    var tbody = el("tbody");
    var table = el("table", { "class": "kb-filter__table" }, [el("thead", {}, [headRow]), tbody]);
    var emptyClear = el("button", { type: "button", text: "Clear all filters" });
    var empty = el("div", { "class": "kb-filter__empty", id: "kb-empty", hidden: "" }, [
      el("p", { text: "No paper matches this combination. Untick a value (the numbers beside each value show " +
                      "what it would give), change the search words, or start again." }),
      emptyClear
    ]);

    var rows = {};
    data.papers.forEach(function (p) { rows[p.id] = row(base, data, p, withStars); });

    function wordsMatch(p) {
      return state.q.trim().toLowerCase().split(/\s+/).every(function (w) { return !w || texts[p.id].indexOf(w) >= 0; });
    }

    function facetMatch(p, f) {
      var wanted = state.selected[f.id];
      if (!wanted.length) { return true; }
      var have = f.of(p);
      return wanted.some(function (v) { return have.indexOf(v) >= 0; });
    }

    /* Papers matching the search and every facet except `skip` (null: every facet). */
    function matching(skip) {
      return data.papers.filter(function (p) {
        return wordsMatch(p) && facets.every(function (f) { return f === skip || facetMatch(p, f); });
      });
    }

    function update() {
      boxes.forEach(function (b) {
        var list = state.selected[b.getAttribute("data-facet")];
        var i = list.indexOf(b.value);
        if (b.checked && i < 0) { list.push(b.value); }
        if (!b.checked && i >= 0) { list.splice(i, 1); }
      });
      state.q = search.value;
      var key = sorts[state.sort];
      var sign = state.dir === "asc" ? 1 : -1;
      var shown = matching(null);
      shown.sort(function (a, b) {
        var ka = key(a), kb = key(b);
        if (ka < kb) { return -sign; }
        if (ka > kb) { return sign; }
        return a.id < b.id ? -1 : 1;
      });
      while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
      shown.forEach(function (p) { tbody.appendChild(rows[p.id]); });

      var pools = {};
      facets.forEach(function (f) { pools[f.id] = matching(f); });
      counters.forEach(function (c) {
        var n = pools[c.facet.id].filter(function (p) { return c.facet.of(p).indexOf(c.value) >= 0; }).length;
        c.n.textContent = String(n);
        c.label.setAttribute("data-n", String(n));
        c.label.classList.toggle("kb-zero", n === 0);
      });

      var selected = facets.reduce(function (s, f) { return s + state.selected[f.id].length; }, 0);
      active.textContent = selected ? "(" + selected + " selected)" : "";
      count.textContent = "Showing " + shown.length + " of " + data.papers.length + " papers";
      root.setAttribute("data-count", String(shown.length));
      table.hidden = shown.length === 0;
      empty.hidden = shown.length !== 0;
      headRow.querySelectorAll("th").forEach(function (th) {
        var s = th.getAttribute("data-sort");
        if (s && s === state.sort) { th.setAttribute("aria-sort", state.dir === "asc" ? "ascending" : "descending"); }
        else { th.removeAttribute("aria-sort"); }
      });
      writeState(facets, state);
    }

    function clearAll() {
      boxes.forEach(function (b) { b.checked = false; });
      search.value = "";
      update();
    }

    boxes.forEach(function (b) {
      b.addEventListener("change", function () {
        update();
        /* The list beside the facets changes height: keep the box just ticked where the reader is. */
        if (b.scrollIntoView) { b.scrollIntoView({ block: "nearest" }); }
      });
    });
    search.addEventListener("input", update);
    clear.addEventListener("click", clearAll);
    emptyClear.addEventListener("click", function () { clearAll(); search.focus(); });

    /* The facets are open beside the list on wide screens, folded above it on narrow ones. */
    var wide = window.matchMedia(WIDE);
    panel.open = wide.matches;
    var follow = function (e) { panel.open = e.matches; };
    if (wide.addEventListener) { wide.addEventListener("change", follow); } else { wide.addListener(follow); }

    root.appendChild(el("div", { "class": "kb-filter__bar" }, [search, count, clear]));
    root.appendChild(el("div", { "class": "kb-filter__layout" }, [
      panel, el("div", { "class": "kb-filter__results" }, [empty, table])
    ]));
    update();
    root.setAttribute("data-ready", "true");
  }

  function init() {
    var root = document.getElementById("kb-filter");
    if (!root || root.getAttribute("data-started")) { return; }
    root.setAttribute("data-started", "true");
    fetch(root.getAttribute("data-src"))
      .then(function (r) {
        if (!r.ok) { throw new Error("papers.json: HTTP " + r.status); }
        return r.json();
      })
      .then(function (data) { setup(root, data); })
      .catch(function (err) {
        root.appendChild(el("p", { "class": "kb-filter__error", text: "Could not load the paper list (" + err.message + ")." }));
      });
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
}());
