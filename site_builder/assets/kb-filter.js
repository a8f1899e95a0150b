/* pruning-kb: the all-papers filter. Reads papers.json, builds facet checkboxes for the six axes,
   venue and year, and a sortable table. Matching: OR within a facet, AND across facets. The state
   lives in the query string (?type=structured,unstructured&year=2024&sort=year&dir=desc), so a
   filtered view can be shared. Only textContent is used for data, never innerHTML. */
(function () {
  "use strict";

  var SORTS = {
    title: function (p) { return (p.short_name || p.title).toLowerCase(); },
    venue: function (p) { return p.site.venue_label.toLowerCase(); },
    year: function (p) { return p.venue.year * 10000 + p.year; },
    stars: function (p) { return p.site.stars === null || p.site.stars === undefined ? -1 : p.site.stars; }
  };

  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") { node.textContent = attrs[k]; } else { node.setAttribute(k, attrs[k]); }
    });
    (children || []).forEach(function (c) { if (c) { node.appendChild(c); } });
    return node;
  }

  function facetsOf(data) {
    var facets = data.axes.map(function (a) {
      return {
        id: a.id, label: a.label, axis: true,
        values: a.values.map(function (v) { return { id: v.id, label: v.label }; }),
        of: function (p) { return (p.tags[a.id] || []).map(function (t) { return t.value; }); }
      };
    });
    var venues = {}, years = {};
    data.papers.forEach(function (p) { venues[p.venue.name] = true; years[String(p.venue.year)] = true; });
    facets.push({
      id: "venue", label: "Venue",
      values: Object.keys(venues).sort(function (a, b) { return a.toLowerCase() < b.toLowerCase() ? -1 : 1; })
        .map(function (v) { return { id: v, label: v }; }),
      of: function (p) { return [p.venue.name]; }
    });
    facets.push({
      id: "year", label: "Year",
      values: Object.keys(years).sort().reverse().map(function (v) { return { id: v, label: v }; }),
      of: function (p) { return [String(p.venue.year)]; }
    });
    return facets;
  }

  function readState(facets) {
    var params = new URLSearchParams(window.location.search);
    var state = { selected: {}, q: params.get("q") || "", sort: "year", dir: "desc" };
    facets.forEach(function (f) {
      var known = {};
      f.values.forEach(function (v) { known[v.id] = true; });
      var raw = params.get(f.id);
      state.selected[f.id] = (raw ? raw.split(",") : []).filter(function (v) { return known[v]; });
    });
    if (SORTS[params.get("sort")]) { state.sort = params.get("sort"); }
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

  function matches(p, facets, state) {
    var q = state.q.trim().toLowerCase();
    if (q && (p.title + " " + (p.short_name || "") + " " + p.authors.join(" ")).toLowerCase().indexOf(q) < 0) {
      return false;
    }
    return facets.every(function (f) {
      var wanted = state.selected[f.id];
      if (!wanted.length) { return true; }
      var have = f.of(p);
      return wanted.some(function (v) { return have.indexOf(v) >= 0; });
    });
  }

  function badge(base, axis, tags) {
    var span = el("span", { "class": "kb-badge kb-axis-" + axis.id, "data-axis": axis.id }, [
      el("a", { "class": "kb-badge__axis", href: base + "concepts/" + axis.id + "/", text: axis.label })
    ]);
    tags.forEach(function (t) {
      var label = (axis.values.filter(function (v) { return v.id === t.value; })[0] || { label: t.value }).label;
      var a = el("a", { "class": "kb-badge__value", href: base + "concepts/" + axis.id + "/#" + t.value }, [
        el("span", { "class": "kb-sr", text: axis.label + ": " })
      ]);
      a.appendChild(document.createTextNode(label));
      span.appendChild(a);
    });
    return span;
  }

  function row(base, data, p) {
    var stars = p.site.stars === null || p.site.stars === undefined ? "–" : "★ " + p.site.stars;
    var tags = el("span", { "class": "kb-tagflow" },
      data.axes.map(function (a) { return badge(base, a, p.tags[a.id] || []); }));
    return el("tr", { "data-id": p.id }, [
      el("td", { "class": "kb-title" }, [
        el("a", { href: base + p.site.page, text: p.short_name || p.title }),
        p.short_name ? el("small", { text: p.title }) : null
      ]),
      el("td", { text: p.site.venue_label }),
      el("td", { text: String(p.venue.year) }),
      el("td", {}, [tags]),
      el("td", { text: stars, title: p.site.stars_as_of ? "as of " + p.site.stars_as_of : "" })
    ]);
  }

  function setup(root, data) {
    var base = root.getAttribute("data-base") || "";
    var facets = facetsOf(data);
    var state = readState(facets);
    var boxes = [];

    var search = el("input", { type: "search", placeholder: "Title or author contains…", "aria-label": "Title or author contains" });
    search.value = state.q;
    var clear = el("button", { type: "button", text: "Clear all filters" });
    var count = el("span", { "class": "kb-filter__count", id: "kb-count", "aria-live": "polite" });
    var grid = el("div", { "class": "kb-filter__facets" });

    facets.forEach(function (f) {
      var used = f.values.map(function (v) {
        return { v: v, n: data.papers.filter(function (p) { return f.of(p).indexOf(v.id) >= 0; }).length };
      }).filter(function (x) { return x.n > 0; });
      var set = el("fieldset", { "data-facet": f.id }, [el("legend", { text: f.label })]);
      used.forEach(function (x) {
        var box = el("input", { type: "checkbox", "data-facet": f.id, value: x.v.id, id: "kb-f-" + f.id + "-" + x.v.id });
        box.checked = state.selected[f.id].indexOf(x.v.id) >= 0;
        boxes.push(box);
        set.appendChild(el("label", { "for": box.id }, [
          box, document.createTextNode(" " + x.v.label + " "), el("span", { "class": "kb-n", text: "(" + x.n + ")" })
        ]));
      });
      grid.appendChild(set);
    });

    var heads = [["title", "Paper"], ["venue", "Venue"], ["year", "Year"], [null, "Tags"], ["stars", "Stars"]];
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

    var rows = {};
    data.papers.forEach(function (p) { rows[p.id] = row(base, data, p); });

    function update() {
      boxes.forEach(function (b) {
        var list = state.selected[b.getAttribute("data-facet")];
        var i = list.indexOf(b.value);
        if (b.checked && i < 0) { list.push(b.value); }
        if (!b.checked && i >= 0) { list.splice(i, 1); }
      });
      state.q = search.value;
      var key = SORTS[state.sort];
      var sign = state.dir === "asc" ? 1 : -1;
      var shown = data.papers.filter(function (p) { return matches(p, facets, state); });
      shown.sort(function (a, b) {
        var ka = key(a), kb = key(b);
        if (ka < kb) { return -sign; }
        if (ka > kb) { return sign; }
        return a.id < b.id ? -1 : 1;
      });
      while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
      shown.forEach(function (p) { tbody.appendChild(rows[p.id]); });
      count.textContent = "Showing " + shown.length + " of " + data.papers.length + " papers";
      root.setAttribute("data-count", String(shown.length));
      headRow.querySelectorAll("th").forEach(function (th) {
        var s = th.getAttribute("data-sort");
        if (s && s === state.sort) { th.setAttribute("aria-sort", state.dir === "asc" ? "ascending" : "descending"); }
        else { th.removeAttribute("aria-sort"); }
      });
      writeState(facets, state);
    }

    boxes.forEach(function (b) { b.addEventListener("change", update); });
    search.addEventListener("input", update);
    clear.addEventListener("click", function () {
      boxes.forEach(function (b) { b.checked = false; });
      search.value = "";
      update();
    });

    root.appendChild(el("div", { "class": "kb-filter__bar" }, [search, clear, count]));
    root.appendChild(grid);
    root.appendChild(table);
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
