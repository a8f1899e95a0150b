/* pruning-kb: small helpers for every page.
   - A "Copy" button on each <pre data-copy-label> block (BibTeX entries, the citation).
   - On the open-challenges page, a link to #<paper> opens that paper's folded note, and one button opens or
     folds every note (`button[data-kb-toggle-all]`, hidden until this script runs). */
(function () {
  "use strict";

  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) { return navigator.clipboard.writeText(text); }
    return new Promise(function (resolve, reject) {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.top = "0";
      area.style.left = "0";
      area.style.opacity = "0";
      document.body.appendChild(area);
      area.select();
      var ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      document.body.removeChild(area);
      if (ok) { resolve(); } else { reject(new Error("copy refused")); }
    });
  }

  function addCopyButtons() {
    document.querySelectorAll("pre[data-copy-label]").forEach(function (pre) {
      if (pre.parentNode.classList && pre.parentNode.classList.contains("kb-copyable")) { return; }
      var label = pre.getAttribute("data-copy-label");
      var wrap = document.createElement("div");
      wrap.className = "kb-copyable";
      pre.parentNode.insertBefore(wrap, pre);
      wrap.appendChild(pre);
      var button = document.createElement("button");
      button.type = "button";
      button.className = "kb-copy";
      button.textContent = label;
      var status = document.createElement("span");
      status.className = "kb-sr";
      status.setAttribute("aria-live", "polite");
      button.addEventListener("click", function () {
        copyText(pre.textContent).then(function () {
          button.textContent = "Copied";
          status.textContent = "Copied to the clipboard";
        }, function () {
          button.textContent = "Select and copy by hand";
          status.textContent = "Copying failed";
        });
        window.setTimeout(function () { button.textContent = label; status.textContent = ""; }, 2000);
      });
      wrap.appendChild(button);
      wrap.appendChild(status);
    });
  }

  function openTarget() {
    var id = decodeURIComponent(window.location.hash.slice(1));
    if (!id) { return; }
    var target = document.getElementById(id);
    if (target && target.tagName === "DETAILS") {
      target.open = true;
      target.scrollIntoView();
    }
  }

  function addToggleAll() {
    document.querySelectorAll("button[data-kb-toggle-all]").forEach(function (button) {
      var selector = button.getAttribute("data-kb-toggle-all");
      var all = function () { return Array.prototype.slice.call(document.querySelectorAll(selector)); };
      var sync = function () {
        var open = all().length > 0 && all().every(function (d) { return d.open; });
        button.textContent = open ? "Fold every note" : "Open every note";
        button.setAttribute("aria-expanded", open ? "true" : "false");
      };
      button.addEventListener("click", function () {
        var open = button.getAttribute("aria-expanded") !== "true";
        all().forEach(function (d) { d.open = open; });
        sync();
      });
      all().forEach(function (d) { d.addEventListener("toggle", sync); });
      button.hidden = false;
      sync();
    });
  }

  // A table wider than its column scrolls sideways inside mkdocs-material's wrapper. While it does, the
  // wrapper is a focusable region named after the table (its caption, else the heading above it), so keyboard
  // users can reach it with Tab and scroll it with the arrow keys (WCAG 2.1.1); it turns plain again once the
  // table fits, so that wide screens get no extra tab stops.
  function regionName(box) {
    var table = box.querySelector("table");
    if (table && table.caption && table.caption.textContent.trim()) { return table.caption.textContent.trim(); }
    for (var node = box; node && node !== document.body; node = node.parentElement) {
      for (var prev = node.previousElementSibling; prev; prev = prev.previousElementSibling) {
        var heads = /^H[1-6]$/.test(prev.tagName) ? [prev] : prev.querySelectorAll("h1, h2, h3, h4, h5, h6");
        if (heads.length) {
          var head = heads[heads.length - 1].cloneNode(true);
          head.querySelectorAll(".headerlink").forEach(function (a) { a.remove(); });
          return head.textContent.trim();
        }
      }
    }
    return document.title;
  }

  function markScrollRegion(box) {
    var scrolls = box.scrollWidth > box.clientWidth + 1;
    if (scrolls && !box.hasAttribute("data-kb-scroll")) {
      box.setAttribute("data-kb-scroll", "");
      box.setAttribute("tabindex", "0");
      box.setAttribute("role", "region");
      box.setAttribute("aria-label", "Table: " + regionName(box) + " (scrolls sideways)");
    } else if (!scrolls && box.hasAttribute("data-kb-scroll")) {
      ["data-kb-scroll", "tabindex", "role", "aria-label"].forEach(function (name) { box.removeAttribute(name); });
    }
  }

  function watchScrollRegions() {
    var watched = new WeakSet();
    var resized = typeof ResizeObserver === "function" ? new ResizeObserver(function (entries) {
      entries.forEach(function (entry) { markScrollRegion(entry.target); });
    }) : null;
    var scan = function () {
      document.querySelectorAll(".md-typeset__scrollwrap").forEach(function (box) {
        if (resized && !watched.has(box)) { watched.add(box); resized.observe(box); }  // e.g. a <details> opens
        markScrollRegion(box);
      });
    };
    scan();
    window.addEventListener("load", scan);
    window.addEventListener("resize", scan);
  }

  function init() {
    addCopyButtons();
    watchScrollRegions();
    addToggleAll();
    openTarget();
    window.addEventListener("hashchange", openTarget);
  }

  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", init); } else { init(); }
}());
